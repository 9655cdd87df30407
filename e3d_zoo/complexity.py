"""Params, MACs, tinynas FLOPs and layer counts: pure functions of an ArchSpec.

Conventions are those of ``shared/reference/E3D_DEFINITIONS.md``:

* ``macs``: conv + linear multiply-adds at integer feature sizes (what the built
  module computes; the paper's GFLOPs column, and ``torch.utils.flop_counter``/2).
* ``tinynas_flops``: the reference search's budget unit. It also counts BatchNorm,
  ReLU and AvgPool-shortcut element ops, and uses *float* spatial sizes
  (R divided by the product of strides so far, never rounded).
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple

from . import stentr
from .errors import ArchError
from .spec import ArchSpec, BlockSpec


class ConvLayer(NamedTuple):
    """One conv of the built network, at integer sizes: what macs and latency tables see."""

    block: int          # top-level block index
    layer: int          # residual layer index inside the block (0 for plain blocks)
    role: str           # "conv" | "pw1" | "dw" | "pw2"
    cin: int
    cout: int
    groups: int
    kt: int
    k: int
    stride: int
    t: int
    h_in: int
    w_in: int
    h_out: int
    w_out: int

    @property
    def macs(self) -> int:
        return (self.t * self.h_out * self.w_out * self.cout
                * (self.cin // self.groups) * self.kt * self.k * self.k)


def conv_out(r: int, k: int, s: int) -> int:
    """Output size of a conv with padding k//2 (and of the ceil-mode AvgPool shortcut)."""
    return (r + 2 * (k // 2) - k) // s + 1


def feature_size(spec: ArchSpec, size: int) -> int:
    """Spatial side of the network's output at a square frame ``size`` (timm's ``pool_size``)."""
    for b in spec.blocks:
        size = conv_out(size, b.k, b.stride)
    return size


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, tuple):
        return size
    return size, size


def _block_conv_layers(bi: int, b: BlockSpec, frames: int, h: int, w: int,
                       n_layers: int) -> Iterator[ConvLayer]:
    """The convs of block ``bi`` at input size (h, w): all of a plain block, those of the
    first ``n_layers`` residual layers of a super-block."""
    if not b.is_super:
        yield ConvLayer(bi, 0, "conv", b.in_channels, b.out_channels, 1, b.kt, b.k, b.stride,
                        frames, h, w, conv_out(h, b.k, b.stride), conv_out(w, b.k, b.stride))
        return
    for j, (c, o, s) in enumerate(b.residual_layers()):
        if j >= n_layers:
            return
        ho, wo = conv_out(h, b.k, s), conv_out(w, b.k, s)
        yield ConvLayer(bi, j, "pw1", c, b.btn, 1, 1, 1, 1, frames, h, w, h, w)
        yield ConvLayer(bi, j, "dw", b.btn, b.btn, b.btn, b.kt, b.k, s, frames, h, w, ho, wo)
        yield ConvLayer(bi, j, "pw2", b.btn, o, 1, 1, 1, 1, frames, ho, wo, ho, wo)
        h, w = ho, wo


def conv_layers(spec: ArchSpec, frames: int, size: int | tuple[int, int]) -> Iterator[ConvLayer]:
    """Every conv of the built network, in order (latency tables time each one)."""
    h, w = _hw(size)
    for bi, b in enumerate(spec.blocks):
        last = None
        for last in _block_conv_layers(bi, b, frames, h, w, b.L):
            yield last
        h, w = last.h_out, last.w_out


# Costs below are closed forms over a super-block's L residual layers: layers 2..L are
# identical (out -> out channels, stride 1, same feature size), so each block costs
# O(1) whatever its L, and nothing iterates per layer.

def block_macs(b: BlockSpec, frames: int, size: int | tuple[int, int]) -> int:
    """Multiply-adds of one top-level block whose input is ``size``."""
    h, w = _hw(size)
    first = sum(layer.macs for layer in _block_conv_layers(0, b, frames, h, w, 1))
    if not b.is_super or b.L == 1:
        return first
    ho, wo = conv_out(h, b.k, b.stride), conv_out(w, b.k, b.stride)
    rest = BlockSpec(b.kind, b.out_channels, b.out_channels, 1, b.kt, b.k, 1, b.btn)
    return first + (b.L - 1) * sum(layer.macs for layer in _block_conv_layers(0, rest, frames, ho, wo, 1))


def head_params(spec: ArchSpec, num_classes: int | None) -> int:
    if num_classes is None:
        return 0
    f, hid = spec.num_features, spec.head_hidden
    if hid:
        return f * hid + hid + (hid * num_classes + num_classes if num_classes else 0)
    return f * num_classes + num_classes if num_classes else 0


def _residual_params(c: int, o: int, b: BlockSpec) -> int:
    return c * b.btn + 2 * b.btn + b.btn * b.kt * b.k * b.k + 2 * b.btn + b.btn * o + 2 * o


def block_params(b: BlockSpec) -> int:
    if not b.is_super:
        return b.in_channels * b.out_channels * b.kt * b.k * b.k + 2 * b.out_channels
    return (_residual_params(b.in_channels, b.out_channels, b)
            + (b.L - 1) * _residual_params(b.out_channels, b.out_channels, b))


def params(spec: ArchSpec, num_classes: int | None = 400) -> int:
    """Trainable parameters; ``num_classes=None`` counts the backbone without the head."""
    return sum(block_params(b) for b in spec.blocks) + head_params(spec, num_classes)


def macs(spec: ArchSpec, frames: int, size: int | tuple[int, int],
         num_classes: int | None = 400) -> int:
    """Conv + linear multiply-adds for one clip (the paper's GFLOPs column)."""
    h, w = _hw(size)
    total = 0
    for b in spec.blocks:
        total += block_macs(b, frames, (h, w))
        h, w = conv_out(h, b.k, b.stride), conv_out(w, b.k, b.stride)
    if num_classes is not None:
        f, hid = spec.num_features, spec.head_hidden
        total += f * hid + hid * num_classes if hid else f * num_classes
    return total


def _residual_tinynas_flops(c: int, o: int, s: int, b: BlockSpec, r_in: float) -> float:
    bt = b.btn
    ri2 = r_in ** 2
    ro2 = (r_in / s) ** 2
    f = (ri2 * (c * bt + 2 * bt)
         + ro2 * (bt * b.kt * b.k ** 2 + 2 * bt)
         + ro2 * (bt * o + 2 * o)
         + ri2 * bt + ro2 * (bt + o))
    if s == 2 and c == o:
        f += ri2 * c
    return f


def block_tinynas_flops(b: BlockSpec, frames: int, r_in: float) -> float:
    T = frames
    r_out = r_in / b.stride
    if not b.is_super:
        return T * r_out ** 2 * (b.in_channels * b.out_channels * b.kt * b.k ** 2 + 3 * b.out_channels)
    total = T * _residual_tinynas_flops(b.in_channels, b.out_channels, b.stride, b, r_in)
    if b.L > 1:
        total += (b.L - 1) * (T * _residual_tinynas_flops(b.out_channels, b.out_channels, 1, b, r_out))
    return total


def tinynas_flops(spec: ArchSpec, frames: int, size: int) -> float:
    """FLOPs in the reference search's convention (float spatial sizes)."""
    r = float(size)
    total = 0.0
    for b in spec.blocks:
        total += block_tinynas_flops(b, frames, r)
        r = r / b.stride
    return total


def block_layers(b: BlockSpec) -> int:
    return 3 * b.L if b.is_super else 1


def num_layers(spec: ArchSpec) -> int:
    """1 per plain conv block + 3 per residual layer (E3D-S: 83)."""
    return sum(block_layers(b) for b in spec.blocks)


def summary(spec: ArchSpec, frames: int | None = None, size: int | None = None,
            num_classes: int = 400) -> dict[str, Any]:
    """Every derived number of ``spec`` at a clip shape (default: the spec's own).

    ``stentr`` is None where the score is undefined (see :mod:`e3d_zoo.stentr`), with
    the reason in ``stentr_undefined``: the costs still describe the network.
    """
    T = spec.frames if frames is None else frames
    R = spec.size if size is None else size
    out = {
        "name": spec.name,
        "frames": T,
        "size": R,
        "params": params(spec, num_classes=num_classes),
        "params_backbone": params(spec, num_classes=None),
        "macs": macs(spec, T, R, num_classes=num_classes),
        "tinynas_flops": tinynas_flops(spec, T, R),
        "layers": num_layers(spec),
        "stentr": None,
        "num_classes": num_classes,
    }
    try:
        out["stentr"] = stentr.stentr_score(spec, T, R)
    except ArchError as exc:
        out["stentr_undefined"] = str(exc)
    return out
