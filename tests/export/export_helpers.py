"""Test helpers: a tiny E3D with non-trivial BatchNorm statistics and logits.

A freshly built E3D has identity BN statistics, zero-initialized residual branches
(bn3.weight = 0) and near-zero logits, which would let a wrong export pass an abs
tolerance. ``trained_like`` gives every BN random statistics and scales the head so
logits are O(1): then agreement really tests the conv arithmetic.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

import e3d_zoo

# the root conftest's tiny spec builder (nested conftests cannot import it by name)
_root = importlib.util.spec_from_file_location("_e3d_root_conftest",
                                               Path(__file__).parents[1] / "conftest.py")
_root_mod = importlib.util.module_from_spec(_root)
_root.loader.exec_module(_root_mod)
make_tiny_spec = _root_mod.make_tiny_spec


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
    return model.eval()


def tiny_model(num_classes: int = 7, seed: int = 0, **spec_kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return trained_like(e3d_zoo.create_model(make_tiny_spec(**spec_kw), num_classes=num_classes), seed)

