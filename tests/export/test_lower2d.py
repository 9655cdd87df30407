"""The 2D lowering is exact: every block kind, odd feature sizes, in PyTorch and in ONNX Runtime."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch

import e3d_zoo
from e3d_export import randomize_statistics
from e3d_export import export_onnx, lower_to_2d, op_histogram
from e3d_zoo.errors import ExportError
from e3d_zoo.runtime import load_backend

EXACT = 1e-5  # the bound on logits


def one_block_model(*, kt: int, k: int, stride: int, shortcut: bool, frames: int, size: int,
                    seed: int = 0, stem_kt: int = 1) -> torch.nn.Module:
    """stem conv -> one residual super-block of the kind under test -> 1x1 conv head."""
    cin = 8
    cout = 8 if shortcut else 12
    blocks = [
        {"class": "Conv3DKXBNRELU", "in": 3, "out": cin, "s": 1, "kt": stem_kt, "k": 3},
        {"class": "SuperRes3DK1DWK1", "in": cin, "out": cout, "s": stride, "kt": kt, "k": k,
         "L": 2, "btn": 16},
        {"class": "Conv3DKXBNRELU", "in": cout, "out": 16, "s": 1, "kt": 1, "k": 1},
    ]
    spec = e3d_zoo.ArchSpec.from_dict({"name": "one_block", "frames": frames, "size": size,
                                       "head_hidden": 16, "blocks": blocks})
    torch.manual_seed(seed)
    return randomize_statistics(e3d_zoo.create_model(spec, num_classes=5), seed)


def _logits(model, x):
    with torch.inference_mode():
        return model(x)


CASES = list(itertools.product([1, 3], [3, 5], [1, 2], [True, False]))


@pytest.mark.parametrize("kt,k,stride,shortcut", CASES,
                         ids=[f"kt{a}-k{b}-s{c}-{'sc' if d else 'nosc'}" for a, b, c, d in CASES])
def test_lowering_is_exact_for_every_block_kind(kt, k, stride, shortcut):
    # odd size 11 -> 6 after stride 2 (ceil): exercises padding and the ceil-mode shortcut pool
    model = one_block_model(kt=kt, k=k, stride=stride, shortcut=shortcut, frames=5, size=11)
    layer = model.blocks[1][0]
    assert layer.has_shortcut == shortcut and layer.conv_dw.kernel_size == (kt, k, k)
    x = torch.randn(2, 3, 5, 11, 11)
    ref = _logits(model, x)
    assert ref.abs().max() > 0.1  # non-trivial logits, so the bound means something
    for shift in ("input", "output"):
        lowered = lower_to_2d(model, shift=shift)
        assert (ref - _logits(lowered, x)).abs().max().item() <= EXACT, shift
        assert not any(isinstance(m, (torch.nn.Conv3d, torch.nn.AvgPool3d, torch.nn.BatchNorm3d))
                       for m in lowered.modules())


@pytest.mark.parametrize("frames", [1, 2, 7])
def test_lowering_handles_clip_lengths_shorter_than_the_temporal_kernel(frames):
    model = one_block_model(kt=5, k=3, stride=2, shortcut=True, frames=frames, size=9, stem_kt=3)
    x = torch.randn(1, 3, frames, 9, 9)
    for shift in ("input", "output"):
        assert (_logits(model, x) - _logits(lower_to_2d(model, shift=shift), x)).abs().max().item() <= EXACT


def test_dense_temporal_conv_block_is_lowered_exactly():
    model = one_block_model(kt=3, k=3, stride=2, shortcut=False, frames=4, size=13, stem_kt=3)
    assert model.blocks[0].conv.kernel_size == (3, 3, 3)
    x = torch.randn(3, 3, 4, 13, 13)
    assert (_logits(model, x) - _logits(lower_to_2d(model), x)).abs().max().item() <= EXACT


def test_lowered_onnx_is_2d_only_and_exact_on_onnxruntime(tmp_path):
    model = one_block_model(kt=3, k=5, stride=2, shortcut=True, frames=5, size=15)
    path = export_onnx(lower_to_2d(model), tmp_path / "m2d.onnx", frames=5, size=15)
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    conv_ranks = {len(inits[n.input[1]].dims) for n in proto.graph.node if n.op_type == "Conv"}
    assert conv_ranks == {4}  # every conv is 2D
    hist = op_histogram(proto)
    assert hist.get("Transpose", 0) == 1  # only the one input rearrangement, none between layers
    assert "BatchNormalization" not in hist
    x = np.random.default_rng(0).standard_normal((3, 3, 5, 15, 15), dtype=np.float32)
    got = load_backend("onnxruntime", path, threads=1).run(x)  # dynamic batch of 3
    ref = _logits(model, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=EXACT, rtol=0)


def test_tiny_zoo_shaped_network_lowers_exactly(tiny_model_mod):
    x = torch.randn(2, 3, 4, 32, 32)
    lowered = lower_to_2d(tiny_model_mod)
    assert lowered.num_classes == tiny_model_mod.num_classes and lowered.spec == tiny_model_mod.spec
    assert (_logits(tiny_model_mod, x) - _logits(lowered, x)).abs().max().item() <= EXACT


def test_lowering_rejects_a_model_that_is_not_e3d():
    with pytest.raises(ExportError, match="expected an E3D model"):
        lower_to_2d(torch.nn.Conv3d(3, 3, 1))


def test_lowered_onnx_with_dynamic_frames_runs_other_clip_lengths(tmp_path, tiny_model_mod):
    path = export_onnx(lower_to_2d(tiny_model_mod), tmp_path / "dyn.onnx", dynamic_frames=True)
    be = load_backend("onnxruntime", path, threads=1)
    for frames in (1, 6):
        x = np.random.default_rng(frames).standard_normal((2, 3, frames, 32, 32), dtype=np.float32)
        ref = _logits(tiny_model_mod, torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(be.run(x), ref, atol=EXACT, rtol=0)
