"""BatchNorm folding: every E3D conv is followed by a BN, which inference can absorb.

Folding happens on a copy before export so the exported graph carries one Conv per
conv (no BatchNormalization nodes) and the user's model keeps its BN layers.
"""
from __future__ import annotations

import copy

import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from e3d_zoo.model import ConvBnAct3d, ResidualK1DWK1

# (conv attribute, bn attribute) of each block kind
_PAIRS = {
    ConvBnAct3d: (("conv", "bn"),),
    ResidualK1DWK1: (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each E3D BatchNorm folded into its conv."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        for conv_name, bn_name in _PAIRS.get(type(module), ()):
            bn = getattr(module, bn_name)
            if isinstance(bn, nn.Identity):
                continue
            setattr(module, conv_name, fuse_conv_bn_eval(getattr(module, conv_name), bn))
            setattr(module, bn_name, nn.Identity())
    return model


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
