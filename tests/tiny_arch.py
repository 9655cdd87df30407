"""The tiny E3D-shaped architecture the tests build (importable as ``tiny_arch``)."""
from __future__ import annotations

from e3d_zoo.spec import ArchSpec

TINY_BLOCKS = [
    {"class": "Conv3DKXBNRELU", "in": 3, "out": 8, "s": 2, "kt": 1, "k": 3},
    {"class": "SuperRes3DK1DWK1", "in": 8, "out": 8, "s": 2, "kt": 1, "k": 5, "L": 1, "btn": 8},
    {"class": "SuperRes3DK1DWK1", "in": 8, "out": 16, "s": 2, "kt": 3, "k": 3, "L": 2, "btn": 16},
    {"class": "SuperRes3DK1DWK1", "in": 16, "out": 16, "s": 1, "kt": 3, "k": 3, "L": 1, "btn": 24},
    {"class": "SuperRes3DK1DWK1", "in": 16, "out": 24, "s": 2, "kt": 3, "k": 3, "L": 1, "btn": 32},
    {"class": "Conv3DKXBNRELU", "in": 24, "out": 32, "s": 1, "kt": 1, "k": 1},
]


def make_tiny_spec(frames: int = 4, size: int = 32, head_hidden: int = 64) -> ArchSpec:
    """A 6-block E3D-shaped network (~10k params) with every block kind the zoo uses."""
    return ArchSpec.from_dict({"name": "e3d_tiny", "frames": frames, "size": size,
                               "head_hidden": head_hidden, "blocks": TINY_BLOCKS})


def tiny_model(num_classes: int = 7, seed: int = 0, **spec_kw):
    """A tiny E3D with trained-like BN statistics and O(1) logits (see randomize_statistics)."""
    import torch

    import e3d_zoo
    from e3d_export import randomize_statistics

    torch.manual_seed(seed)
    return randomize_statistics(e3d_zoo.create_model(make_tiny_spec(**spec_kw), num_classes=num_classes), seed)
