"""Params, MACs, tinynas FLOPs, layers and STEntr against the reference check values."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import e3d_zoo
from e3d_zoo import complexity, stentr
from e3d_zoo.zoo import load_zoo_arch


def test_e3d_s_matches_every_reference_check_value(e3d_s_checks):
    s = complexity.summary(load_zoo_arch("e3d_s"), num_classes=400)
    assert round(s["stentr"], 6) == e3d_s_checks["stentr_score_T13_R160"]
    assert s["tinynas_flops"] == e3d_s_checks["tinynas_flops_T13_R160"]
    assert s["macs"] == e3d_s_checks["conv_linear_macs_T13_R160_400_classes"]
    assert s["params_backbone"] == e3d_s_checks["params_backbone_without_head"]
    assert s["params"] == e3d_s_checks["params_with_head_hidden2048_400_classes"]
    assert s["layers"] == e3d_s_checks["layers"]


def _score_by_definition(spec, T, R):
    """STEntr written out term by term from E3D_DEFINITIONS.md, independently of stentr.py."""
    r = R
    total = 0.0
    for b in spec.blocks:
        r = r // b.stride
        if b.k == 1:
            alpha = 1.0
        else:
            u, v = (T, r, r), (b.kt, b.k, b.k)
            cos = sum(a * c for a, c in zip(u, v)) / (math.hypot(*u) * math.hypot(*v))
            alpha = -math.log(1 - cos)
        kk = b.kt * b.k ** 2 * alpha
        if not b.is_super:
            total += 0.5 * math.log(b.in_channels * kk)
        else:
            for j in range(b.L):
                cin = b.in_channels if j == 0 else b.out_channels
                total += 0.5 * math.log(cin * b.btn * kk)
    return total + math.log(spec.blocks[-1].out_channels)


@pytest.mark.parametrize("name", ["e3d_s", "e3d_m", "e3d_l"])
def test_stentr_matches_the_definition_for_all_zoo_models(name):
    spec = load_zoo_arch(name)
    assert stentr.stentr_score(spec) == pytest.approx(_score_by_definition(spec, spec.frames, spec.size), rel=1e-12)
    assert stentr.stentr_score(spec, stage_weights=[0, 0, 0, 0, 1]) == stentr.stentr_score(spec)


@pytest.mark.parametrize("name", ["e3d_s", "e3d_m", "e3d_l"])
def test_zoo_models_fit_their_reference_search_budgets(name):
    budgets = {"e3d_s": (2.0e9, 83), "e3d_m": (5.0e9, 83), "e3d_l": (18.5e9, 167)}[name]
    spec = load_zoo_arch(name)
    assert complexity.tinynas_flops(spec, spec.frames, spec.size) <= budgets[0]
    assert complexity.num_layers(spec) == budgets[1]


@pytest.mark.parametrize("name, paper_gflops", [("e3d_s", 1.9), ("e3d_m", 4.7), ("e3d_l", 18.3)])
def test_macs_agree_with_the_paper_table(name, paper_gflops):
    """Within 2%: E3D-M's blocks give 4.645 GMACs where the paper prints 4.7 (its rounding);
    E3D-S is pinned exactly by the check value above."""
    spec = load_zoo_arch(name)
    assert complexity.macs(spec, spec.frames, spec.size) / 1e9 == pytest.approx(paper_gflops, rel=0.02)


def test_e3d_l_uses_float_feature_sizes():
    """312 -> ... -> 9.75: the tinynas convention never rounds."""
    spec = load_zoo_arch("e3d_l")
    last = spec.blocks[-1]
    r = 312 / 32
    expected_head = 16 * r ** 2 * (last.in_channels * last.out_channels + 3 * last.out_channels)
    assert complexity.block_tinynas_flops(last, 16, r) == expected_head


def _count_macs(model, x):
    with FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("frames, size", [(4, 32), (3, 37), (1, 33)])
def test_macs_match_torch_flop_counter(tiny_spec, frames, size):
    model = e3d_zoo.create_model(tiny_spec, num_classes=7).eval()
    x = torch.randn(1, 3, frames, size, size)
    assert complexity.macs(tiny_spec, frames, size, num_classes=7) == _count_macs(model, x)


def test_e3d_s_macs_match_torch_flop_counter(e3d_s_checks):
    model = e3d_zoo.create_model("e3d_s").eval()
    assert (_count_macs(model, torch.randn(1, 3, 13, 160, 160))
            == e3d_s_checks["conv_linear_macs_T13_R160_400_classes"])


@pytest.mark.parametrize("name", ["e3d_s", "e3d_m", "e3d_l"])
def test_params_match_the_built_module(name):
    model = e3d_zoo.create_model(name, num_classes=400)
    spec = load_zoo_arch(name)
    n = sum(p.numel() for p in model.parameters())
    assert n == complexity.params(spec, 400)
    n_backbone = sum(p.numel() for p in model.blocks.parameters())
    assert n_backbone == complexity.params(spec, None)


def test_params_without_classifier(tiny_spec):
    model = e3d_zoo.create_model(tiny_spec, num_classes=0)
    assert sum(p.numel() for p in model.parameters()) == complexity.params(tiny_spec, 0)


def test_super_block_costs_are_closed_forms_equal_to_the_per_layer_sums(tiny_spec):
    """Layers 2..L of a super-block are identical: O(1) per block, same numbers as summing."""
    blocks = [b.to_dict() for b in tiny_spec.blocks]
    blocks[2]["L"] = 256  # the largest L an arch file may hold
    spec = e3d_zoo.ArchSpec.from_dict({**tiny_spec.to_dict(), "blocks": blocks})
    per_layer = sum(layer.macs for layer in complexity.conv_layers(spec, 4, 32))
    assert complexity.macs(spec, 4, 32, num_classes=None) == per_layer
    by_layer_params = sum(c * b.btn + 4 * b.btn + b.btn * b.kt * b.k * b.k + b.btn * o + 2 * o
                          for b in spec.blocks if b.is_super for c, o, _ in b.residual_layers())
    plain = sum(complexity.block_params(b) for b in spec.blocks if not b.is_super)
    assert complexity.params(spec, num_classes=None) == by_layer_params + plain
    assert complexity.num_layers(spec) == sum(3 * b.L if b.is_super else 1 for b in spec.blocks)


def test_a_clip_shape_the_network_cannot_take_is_an_error_everywhere():
    from e3d_zoo.errors import ArchError
    from e3d_zoo.zoo import spec_for

    spec = load_zoo_arch("e3d_s")
    for frames, size, needle in ((0, None, "frames"), (-1, None, "frames"), (None, 7, r"\[32, 8192\]")):
        with pytest.raises(ArchError, match=needle):
            spec.with_clip(frames, size)
        with pytest.raises(ArchError, match=needle):
            spec_for("e3d_s", frames=frames, size=size)
    with pytest.raises(ArchError, match="frames"):
        spec.replace(frames=0)
    assert spec.with_clip(None, None) == spec and spec.with_clip(8, 32).size == 32
