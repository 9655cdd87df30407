"""Exact 3D -> 2D lowering: the same network with only 2D ops, time folded into the batch.

Why: ONNX Runtime, TensorRT on small devices and many NPUs have fast 2D (depthwise)
convolution kernels and slow or missing 3D ones. E3D never strides or pools in
time, so every layer maps onto frames independently except the temporal taps of
``kt x k x k`` convs:

* ``1 x k x k`` conv (any groups)  -> ``k x k`` Conv2d over the N*T frames;
* ``kt x k x k`` conv              -> ``kt`` Conv2d (one per temporal tap ``j``) applied
  to the input shifted along time by ``j - kt//2`` frames (zeros past the clip ends,
  which is the 3D conv's zero padding), summed. Shifting a tap's input equals shifting
  its output (the conv acts per frame; only the centre tap has a bias);
* AvgPool (1, 2, 2) shortcut       -> AvgPool2d(2);
* global average pool              -> spatial mean per frame, then mean over frames.

The input is taken as (N, C, T, H, W) like the original and rearranged once to
(N*T, C, H, W); every layer after that works in that layout (the temporal shifts are
views of the batch axis as (N, T, ...), no transposes). BatchNorm is folded first.
Equal to the 3D model to float rounding (tests bound it at 1e-5 abs on logits).
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from e3d_zoo.errors import ExportError
from e3d_zoo.model import E3D, ConvBnAct3d, ResidualK1DWK1

from .fold import fold_batchnorm


def _shift_time(z: torch.Tensor, frames: int, offset: int) -> torch.Tensor:
    """``out[n, t] = z[n, t + offset]``, zero where ``t + offset`` is outside the clip.

    ``z`` is (N*T, C, H, W); the shift is a Pad + Slice on its (N, T, C*H*W) view.
    """
    if offset == 0:
        return z
    nt, c, h, w = z.shape
    v = z.reshape(-1, frames, c * h * w)
    if offset > 0:
        v = F.pad(v, (0, 0, 0, offset))[:, offset:offset + frames]
    else:
        v = F.pad(v, (0, 0, -offset, 0))[:, :frames]
    return v.reshape(nt, c, h, w)


class TemporalConv2d(nn.Module):
    """A (kt, k, k) Conv3d with temporal stride 1 as ``kt`` Conv2d taps plus time shifts.

    ``kt == 1`` is a single Conv2d. The bias is carried by the centre tap only.
    """

    def __init__(self, conv3d: nn.Conv3d, shift: str = "input"):
        super().__init__()
        if shift not in ("input", "output"):
            raise ExportError(f"lower_to_2d: shift must be 'input' or 'output', found {shift!r}")
        self.shift_inputs = shift == "input"
        kt, kh, kw = conv3d.kernel_size
        st, sh, sw = conv3d.stride
        pt, ph, pw = conv3d.padding if isinstance(conv3d.padding, tuple) else (None,) * 3
        if st != 1 or conv3d.dilation != (1, 1, 1):
            raise ExportError("lower_to_2d: only temporal stride 1 and no dilation can be lowered "
                              f"(found stride {conv3d.stride}, dilation {conv3d.dilation})")
        if pt != kt // 2 or kt % 2 == 0:
            raise ExportError(f"lower_to_2d: expected odd kt with 'same' temporal padding, found "
                              f"kt={kt}, padding={conv3d.padding}")
        self.kt = kt
        self.taps = nn.ModuleList()
        for j in range(kt):
            c2 = nn.Conv2d(conv3d.in_channels, conv3d.out_channels, (kh, kw), stride=(sh, sw),
                           padding=(ph, pw), groups=conv3d.groups,
                           bias=conv3d.bias is not None and j == kt // 2)
            with torch.no_grad():
                c2.weight.copy_(conv3d.weight[:, :, j])
                if c2.bias is not None:
                    c2.bias.copy_(conv3d.bias)
            self.taps.append(c2)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        centre = self.kt // 2
        y = self.taps[centre](x)
        if self.kt == 1:
            return y
        if self.shift_inputs:
            # Shift the input once per side tap instead of each tap's output: a per-frame conv
            # commutes with a frame shift, and zero frames stay zero (side taps carry no
            # bias), which lets ONNX Runtime fuse the sum into its convs. One Pad with a
            # negative end is the whole shift (zeros in front, the last frames cut): one
            # copy per tap, where Pad + Slice made two.
            nt, c, h, w = x.shape
            frames_view = x.reshape(-1, frames, c * h * w)
            for j, tap in enumerate(self.taps):
                s = j - centre  # tap j reads frame t + s
                if s and abs(s) < frames:  # further out it reads only zeros
                    y = y + tap(F.pad(frames_view, (0, 0, -s, s)).reshape(nt, c, h, w))
            return y
        for j, tap in enumerate(self.taps):
            if j != centre:
                y = y + _shift_time(tap(x), frames, j - centre)
        return y


class ConvAct2d(nn.Module):
    """Lowered Conv3DKXBNRELU (BN folded into the conv)."""

    def __init__(self, block: ConvBnAct3d, shift: str = "input"):
        super().__init__()
        self.conv = TemporalConv2d(block.conv, shift)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return F.relu(self.conv(x, frames))


class Residual2d(nn.Module):
    """Lowered residual K1DWK1 layer (BNs folded; drop-path is identity at inference)."""

    def __init__(self, layer: ResidualK1DWK1, shift: str = "input"):
        super().__init__()
        self.conv_pw = TemporalConv2d(layer.conv_pw, shift)
        self.conv_dw = TemporalConv2d(layer.conv_dw, shift)
        self.conv_pwl = TemporalConv2d(layer.conv_pwl, shift)
        self.shortcut: Optional[nn.Module]
        if layer.shortcut is None:
            self.shortcut = None
        elif isinstance(layer.shortcut, nn.Identity):
            self.shortcut = nn.Identity()
        elif isinstance(layer.shortcut, nn.AvgPool3d):
            p = layer.shortcut
            ks, st = p.kernel_size, p.stride
            if ks[0] != 1 or st[0] != 1 or any(p.padding if isinstance(p.padding, tuple) else [p.padding]):
                raise ExportError(f"lower_to_2d: cannot lower shortcut pooling {p}")
            # padding is 0, so count_include_pad only decides ceil-mode edge windows; False is
            # what torch does there and makes ONNX runtimes divide the same way.
            self.shortcut = nn.AvgPool2d(ks[1:], st[1:], ceil_mode=p.ceil_mode, count_include_pad=False)
        else:
            raise ExportError(f"lower_to_2d: unknown shortcut module {type(layer.shortcut).__name__}")

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        y = F.relu(self.conv_pw(x, frames))
        y = F.relu(self.conv_dw(y, frames))
        y = self.conv_pwl(y, frames)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return F.relu(y)


class E3D2d(nn.Module):
    """The 2D-lowered E3D: takes (N, C, T, H, W) clips, computes in (N*T, C, H, W)."""

    is_lowered_2d = True

    def __init__(self, model: E3D, shift: str = "input"):
        super().__init__()
        if not isinstance(model, E3D):
            raise ExportError(f"lower_to_2d: expected an E3D model, found {type(model).__name__}")
        if model.global_pool != "avg":
            raise ExportError("lower_to_2d: needs the model's average-pool head")
        folded = fold_batchnorm(model)
        layers: List[nn.Module] = []
        for block in folded.blocks:
            if isinstance(block, ConvBnAct3d):
                layers.append(ConvAct2d(block, shift))
            else:
                for layer in block:
                    layers.append(Residual2d(layer, shift))
        self.layers = nn.ModuleList(layers)
        self.head_fc = folded.head_fc
        self.head_act = folded.head_act
        self.classifier = folded.classifier
        # what the exporters and the manifest read off a model
        self.spec = model.spec
        self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        self.num_classes = model.num_classes
        self.in_chans = model.in_chans
        self.eval()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) -> last feature map as (N*T, C', H', W')."""
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ExportError(f"input: expected (N, {self.in_chans}, T, H, W), found {tuple(x.shape)}")
        n, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(n * t, c, h, w)
        for layer in self.layers:
            y = layer(y, t)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        y = self.forward_features(x)
        pooled = y.mean(dim=(2, 3))
        pooled = pooled.reshape(-1, t, pooled.shape[1]).mean(dim=1)
        return self.classifier(self.head_act(self.head_fc(pooled)))


def lower_to_2d(model: nn.Module, *, shift: str = "input") -> E3D2d:
    """The exact 2D form of an E3D model (BN folded, eval mode); see the module docstring.

    ``shift``: where the temporal shift happens for ``kt > 1`` convs. ``"input"``
    (default) pads each such conv's input once and feeds every side tap a shifted
    window, which lets ONNX Runtime fuse the tap sum into its convs; ``"output"``
    shifts each tap's output (the textbook form, kept for comparison).
    """
    return E3D2d(model, shift)
