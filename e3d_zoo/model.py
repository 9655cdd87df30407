"""The E3D network, built from an ArchSpec exactly as the reference describes.

Blocks (``shared/reference/e3d_reference.json``):

* ``Conv3DKXBNRELU``: conv(kt x k x k, stride (1, s, s)) + BN + ReLU.
* ``SuperRes3DK1DWK1``: L residual bottleneck layers, each 1x1x1 conv(in -> btn) + BN
  + ReLU, depthwise conv(kt x k x k, stride (1, s, s) on the first layer only) + BN +
  ReLU, 1x1x1 conv(btn -> out) + BN, then the shortcut is added and ReLU applied. The
  shortcut exists only where the layer's in == out: identity, or AvgPool3d(1, 2, 2)
  when the layer has stride 2.
* Head: global average pool -> Linear(C -> hidden) -> Swish -> Dropout -> Linear.

The API follows timm (``forward_features``, ``forward_head``, ``reset_classifier``,
``forward_intermediates`` for ``features_only``).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.layers import DropPath
from timm.models._manipulate import checkpoint_seq

from .errors import ArchError
from .spec import ArchSpec, BlockSpec


def _pad(kt: int, k: int) -> Tuple[int, int, int]:
    return kt // 2, k // 2, k // 2


class ConvBnAct3d(nn.Module):
    """Conv3DKXBNRELU."""

    def __init__(self, cin: int, cout: int, kt: int, k: int, stride: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, (kt, k, k), stride=(1, stride, stride),
                              padding=_pad(kt, k), bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ResidualK1DWK1(nn.Module):
    """One residual layer of SuperRes3DK1DWK1."""

    def __init__(self, cin: int, cout: int, btn: int, kt: int, k: int, stride: int,
                 drop_path: float = 0.0):
        super().__init__()
        self.conv_pw = nn.Conv3d(cin, btn, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(btn)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_dw = nn.Conv3d(btn, btn, (kt, k, k), stride=(1, stride, stride),
                                 padding=_pad(kt, k), groups=btn, bias=False)
        self.bn2 = nn.BatchNorm3d(btn)
        self.act2 = nn.ReLU(inplace=True)
        self.conv_pwl = nn.Conv3d(btn, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(cout)
        self.has_shortcut = cin == cout
        if not self.has_shortcut:
            self.shortcut = None
        elif stride == 1:
            self.shortcut = nn.Identity()
        else:
            # ceil_mode keeps the shortcut the same size as the padded depthwise conv's
            # output on odd feature sizes; on even sizes it equals the reference pooling.
            self.shortcut = nn.AvgPool3d((1, 2, 2), stride=(1, 2, 2), ceil_mode=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_shortcut else nn.Identity()
        self.act_out = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.act2(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        if self.shortcut is not None:
            y = self.drop_path(y) + self.shortcut(x)
        return self.act_out(y)


class SuperResK1DWK1(nn.Sequential):
    """SuperRes3DK1DWK1: ``L`` residual layers, the first one strided."""

    def __init__(self, block: BlockSpec, drop_paths: Sequence[float]):
        layers = [ResidualK1DWK1(c, o, block.btn, block.kt, block.k, s, dp)
                  for (c, o, s), dp in zip(block.residual_layers(), drop_paths)]
        super().__init__(*layers)


class E3D(nn.Module):
    """E3D network for clips shaped (N, C, T, H, W)."""

    def __init__(
            self,
            spec: ArchSpec,
            num_classes: int = 400,
            in_chans: Optional[int] = None,
            global_pool: str = "avg",
            head_hidden: Optional[int] = None,
            drop_rate: float = 0.2,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if not isinstance(spec, ArchSpec):
            raise ArchError(f"E3D needs an ArchSpec, found {type(spec).__name__}")
        if in_chans is not None and in_chans != spec.in_chans:
            raise ArchError(f"in_chans: the architecture's first block takes {spec.in_chans} "
                            f"channels, found in_chans={in_chans}")
        if global_pool not in ("avg", ""):
            raise ArchError(f"global_pool: expected 'avg' or '', found {global_pool!r}")
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = spec.in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.num_features = spec.num_features
        self.head_hidden_size = spec.head_hidden if head_hidden is None else head_hidden

        n_res = sum(b.L for b in spec.blocks if b.is_super)
        rates = torch.linspace(0, drop_path_rate, max(n_res, 1)).tolist()
        blocks: List[nn.Module] = []
        i = 0
        for b in spec.blocks:
            if b.is_super:
                blocks.append(SuperResK1DWK1(b, rates[i:i + b.L]))
                i += b.L
            else:
                blocks.append(ConvBnAct3d(b.in_channels, b.out_channels, b.kt, b.k, b.stride))
        self.blocks = nn.Sequential(*blocks)

        self.feature_info = []
        reduction = 1
        ends = spec.stage_ends()
        for bi, b in enumerate(spec.blocks):
            reduction *= b.stride
            if bi in ends:
                self.feature_info.append(dict(num_chs=b.out_channels, reduction=reduction,
                                              module=f"blocks.{bi}", stage=len(self.feature_info)))
        self._stage_ends = ends

        self.global_pool = global_pool
        if self.head_hidden_size:
            self.head_fc = nn.Linear(self.num_features, self.head_hidden_size)
            self.head_act = nn.SiLU(inplace=True)
            pre_logits_dim = self.head_hidden_size
        else:
            self.head_fc = nn.Identity()
            self.head_act = nn.Identity()
            pre_logits_dim = self.num_features
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(pre_logits_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every layer starts as its
        # shortcut, the usual trick for training deep residual nets stably.
        for m in self.modules():
            if isinstance(m, ResidualK1DWK1) and m.has_shortcut:
                nn.init.zeros_(m.bn3.weight)

    # ---- timm API ------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^blocks\.0", blocks=r"^blocks\.(\d+)" if coarse else r"^blocks\.(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ArchError(f"global_pool: expected 'avg' or '', found {global_pool!r}")
            self.global_pool = global_pool
        in_dim = self.head_hidden_size or self.num_features
        self.classifier = nn.Linear(in_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ArchError(f"input: expected a clip batch shaped (N, {self.in_chans}, T, H, W), "
                            f"found {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3, 4))
        else:
            x = x.flatten(1)
        x = self.head_act(self.head_fc(x))
        if pre_logits:
            return x
        x = self.head_drop(x)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: Any = "NCTHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (N, C, T, H, W) at ``indices`` (stage numbers; default all)."""
        self._check_input(x)
        n = len(self._stage_ends)
        if indices is None:
            take = list(range(n))
        elif isinstance(indices, int):
            take = list(range(n - indices, n))
        else:
            take = [i % n for i in indices]
        for i in take:
            if not 0 <= i < n:
                raise ArchError(f"out_indices: stage {i} out of range (the network has {n} stages)")
        wanted = {self._stage_ends[i]: i for i in take}
        last = max(wanted) if (stop_early or intermediates_only) else len(self.blocks) - 1
        feats = {}
        for bi, block in enumerate(self.blocks):
            if bi > last:
                break
            x = block(x)
            if bi in wanted:
                feats[wanted[bi]] = x
        intermediates = [feats[i] for i in take]
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        n = len(self._stage_ends)
        take = list(range(n - indices, n)) if isinstance(indices, int) else [i % n for i in indices]
        keep_until = self._stage_ends[max(take)]
        self.blocks = self.blocks[:keep_until + 1]
        if prune_head:
            self.head_fc = nn.Identity()
            self.head_act = nn.Identity()
            self.reset_classifier(0, "")
        return take
