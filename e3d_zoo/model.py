"""The E3D network, built from an ArchSpec exactly as the reference describes.

Blocks (``shared/reference/e3d_reference.json``):

* ``Conv3DKXBNRELU``: conv(kt x k x k, stride (1, s, s)) + BN + ReLU.
* ``SuperRes3DK1DWK1``: L residual bottleneck layers, each 1x1x1 conv(in -> btn) + BN
  + ReLU, depthwise conv(kt x k x k, stride (1, s, s) on the first layer only) + BN +
  ReLU, 1x1x1 conv(btn -> out) + BN, then the shortcut is added and ReLU applied. The
  shortcut exists only where the layer's in == out: identity, or AvgPool3d(1, 2, 2)
  when the layer has stride 2.
* Head: global average pool -> Linear(C -> hidden) -> Swish -> Dropout -> Linear.

The API is timm's (``forward_features``, ``forward_head(pre_logits)``,
``reset_classifier``, ``forward_intermediates`` / ``prune_intermediate_layers`` for
``features_only``), with clips (N, C, T, H, W) in place of images: feature maps are
(N, C, T, H, W), spatial axes the last two, ``feature_info`` reductions spatial
(time is never strided). ``global_pool=''`` keeps the map: the head's linear layers
then apply at every (t, h, w) position, as timm's MLP heads do without pooling.
TorchScript and torch.fx (timm's tracer, ``create_feature_extractor``) work; timm's
own ``tests/test_models.py`` runs against this file (``tests/timm_conformance``).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from timm.layers import DropPath
from timm.models import register_notrace_function
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint, checkpoint_seq

from .errors import ArchError
from .spec import ArchSpec, BlockSpec

# Accepted output_fmt values of forward_intermediates: timm's feature wrappers pass its
# 2D names ('NCHW'); for clips they mean channels first / last with time kept.
_CHANNELS_FIRST = ("NCHW", "NCTHW")
_CHANNELS_LAST = ("NHWC", "NTHWC")


def _pad(kt: int, k: int) -> Tuple[int, int, int]:
    return kt // 2, k // 2, k // 2


@register_notrace_function
def check_clip(x: torch.Tensor, in_chans: int) -> None:
    """ArchError unless ``x`` is a batch of clips (N, in_chans, T, H, W).

    A leaf for torch.fx (timm's tracer keeps it as one call), so traced graphs still
    check their input.
    """
    if x.dim() != 5 or x.shape[1] != in_chans:
        shape = ", ".join([str(d) for d in x.shape])  # tuple() does not script
        raise ArchError(f"input: expected a clip batch shaped (N, {in_chans}, T, H, W), "
                        f"found ({shape})")


class ConvBnAct3d(nn.Module):
    """Conv3DKXBNRELU."""

    def __init__(self, cin: int, cout: int, kt: int, k: int, stride: int, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Conv3d(cin, cout, (kt, k, k), stride=(1, stride, stride),
                              padding=_pad(kt, k), bias=False, **dd)
        self.bn = nn.BatchNorm3d(cout, **dd)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ResidualK1DWK1(nn.Module):
    """One residual layer of SuperRes3DK1DWK1."""

    def __init__(self, cin: int, cout: int, btn: int, kt: int, k: int, stride: int,
                 drop_path: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv_pw = nn.Conv3d(cin, btn, 1, bias=False, **dd)
        self.bn1 = nn.BatchNorm3d(btn, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_dw = nn.Conv3d(btn, btn, (kt, k, k), stride=(1, stride, stride),
                                 padding=_pad(kt, k), groups=btn, bias=False, **dd)
        self.bn2 = nn.BatchNorm3d(btn, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.conv_pwl = nn.Conv3d(btn, cout, 1, bias=False, **dd)
        self.bn3 = nn.BatchNorm3d(cout, **dd)
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

    def __init__(self, block: BlockSpec, drop_paths: Sequence[float], device=None, dtype=None):
        layers = [ResidualK1DWK1(c, o, block.btn, block.kt, block.k, s, dp, device=device, dtype=dtype)
                  for (c, o, s), dp in zip(block.residual_layers(), drop_paths)]
        super().__init__(*layers)


def _check_pool(global_pool: str) -> None:
    if global_pool not in ("avg", ""):
        raise ArchError(f"global_pool: expected 'avg' or '' (no pooling), found {global_pool!r}")


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
            device=None,
            dtype=None,
    ):
        """``in_chans`` other than the architecture's first block's input (e.g. 1 for
        grayscale or depth, 2 for optical flow) rebuilds that block for it; pretrained
        weights are adapted on load (timm's ``adapt_input_conv``)."""
        super().__init__()
        if not isinstance(spec, ArchSpec):
            raise ArchError(f"E3D needs an ArchSpec, found {type(spec).__name__}")
        if in_chans is not None and in_chans != spec.in_chans:
            if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
                raise ArchError(f"in_chans: expected an integer >= 1, found {in_chans!r}")
            first = spec.blocks[0]
            spec = spec.with_blocks((BlockSpec(first.kind, in_chans, *first.key()[2:]),)
                                    + spec.blocks[1:])
        _check_pool(global_pool)
        dd = {"device": device, "dtype": dtype}
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = spec.in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.num_features = spec.num_features
        self.head_hidden_size = spec.head_hidden if head_hidden is None else head_hidden

        n_res = sum(b.L for b in spec.blocks if b.is_super)
        # Computed in Python, not torch.linspace: under a meta-device context a tensor
        # could not give its values back.
        rates = [drop_path_rate * i / max(n_res - 1, 1) for i in range(n_res)]
        blocks: List[nn.Module] = []
        i = 0
        for b in spec.blocks:
            if b.is_super:
                blocks.append(SuperResK1DWK1(b, rates[i:i + b.L], **dd))
                i += b.L
            else:
                blocks.append(ConvBnAct3d(b.in_channels, b.out_channels, b.kt, b.k, b.stride, **dd))
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
            self.head_fc = nn.Linear(self.num_features, self.head_hidden_size, **dd)
            self.head_act = nn.SiLU(inplace=True)
        else:
            self.head_fc = nn.Identity()
            self.head_act = nn.Identity()
            self.head_hidden_size = self.num_features
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = (nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0
                           else nn.Identity())
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
        return dict(stem=r"^blocks\.0\.", blocks=r"^blocks\.(\d+)" if coarse else
                    [(r"^blocks\.(\d+)\.(\d+)\.", None), (r"^blocks\.(\d+)\.", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier on the same device, dtype and train/eval mode as the model."""
        if global_pool is not None:
            _check_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = next(self.parameters(), None)
        dd = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.classifier = (nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0
                           else nn.Identity())
        self.classifier.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_clip(x, self.in_chans)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = self.head_act(self.head_fc(x.mean(dim=(2, 3, 4))))
            if pre_logits:
                return x
            return self.classifier(self.head_drop(x))
        # No pooling: the same linear layers at every position, channels moved last and back.
        x = self.head_act(self.head_fc(x.movedim(1, -1)))
        if not pre_logits:
            x = self.classifier(self.head_drop(x))
        return x.movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCTHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs at ``indices`` (stage numbers; an int n: the last n; default all).

        ``output_fmt``: 'NCTHW' (or timm's 'NCHW') channels first, 'NTHWC' (or
        'NHWC') channels last; the final features stay (N, C, T, H, W). E3D has no
        final norm, so ``norm`` changes nothing.
        """
        channels_last = output_fmt in _CHANNELS_LAST
        if not channels_last and output_fmt not in _CHANNELS_FIRST:
            raise ArchError(f"output_fmt: expected one of {list(_CHANNELS_FIRST + _CHANNELS_LAST)}, "
                            f"found {output_fmt!r}")
        check_clip(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self._stage_ends), indices)
        take_blocks = [self._stage_ends[i] for i in take_indices]
        last_block = self._stage_ends[max_index] if stop_early else len(self.blocks) - 1
        intermediates: List[torch.Tensor] = []
        for bi, block in enumerate(self.blocks):
            if bi > last_block:
                break
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
            if bi in take_blocks:
                intermediates.append(x.permute(0, 2, 3, 4, 1) if channels_last else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the blocks after the last stage in ``indices``; returns the stage indices.

        A head sized for the final features goes with them (the features then end at
        the last kept stage); ``prune_head`` also removes a head that still fits.
        """
        take_indices, max_index = feature_take_indices(len(self._stage_ends), indices)
        keep_until = self._stage_ends[max_index]
        prune_end = keep_until < len(self.blocks) - 1
        self.blocks = self.blocks[:keep_until + 1]
        if prune_end:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.head_fc = nn.Identity()
            self.head_act = nn.Identity()
            self.head_hidden_size = self.num_features
            self.reset_classifier(0, "")
        return take_indices
