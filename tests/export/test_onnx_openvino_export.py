"""ONNX and OpenVINO export: folded, checked, simplified, with metadata, verified on the runtimes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from tiny_arch import tiny_model
from e3d_export import (export_onnx, export_openvino, has_batchnorm, fold_batchnorm, op_histogram,
                        random_clips, read_metadata, verify_artifact)
from e3d_zoo.errors import BackendError, ExportError, VerificationError
from e3d_zoo.runtime import load_backend


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, tiny_model_mod):
    return export_onnx(tiny_model_mod, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_fold_batchnorm_keeps_logits_and_leaves_the_original_alone(tiny_model_mod):
    folded = fold_batchnorm(tiny_model_mod)
    assert not has_batchnorm(folded) and has_batchnorm(tiny_model_mod)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.inference_mode():
        assert (folded(x) - tiny_model_mod(x)).abs().max() < 1e-5


def test_onnx_is_checker_clean_folded_opset17_with_metadata(onnx_file):
    proto = onnx.load(str(onnx_file))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    hist = op_histogram(proto)
    assert "BatchNormalization" not in hist and hist["Conv"] == 17  # one Conv per conv layer
    assert [i.name for i in proto.graph.input] == ["clips"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 4, 32, 32]
    md = read_metadata(onnx_file)
    assert md["model_name"] == "e3d_tiny" and md["input_layout"] == "NCTHW"
    assert md["frames"] == 4 and md["size"] == 32 and md["num_classes"] == 7
    assert md["mean"] == pytest.approx([0.485, 0.456, 0.406]) and len(md["std"]) == 3
    assert md["arch"]["blocks"][0]["class"] == "Conv3DKXBNRELU"
    assert md["labels"] == []


def test_onnx_verifies_on_onnxruntime(onnx_file, tiny_model_mod):
    r = verify_artifact(onnx_file, tiny_model_mod, n_clips=3, threads=1)
    assert r.passed and r.max_abs_err <= 1e-4 and r.top1_agreement == 1.0 and r.clips == 3


def test_verification_failure_raises_with_the_numbers(onnx_file):
    other = tiny_model(seed=5)  # different weights: the artifact is not this model
    with pytest.raises(VerificationError, match=r"tiny.onnx: verification failed on onnxruntime \(fp32\): .*failed: max_rel_err .* cosine"):
        verify_artifact(onnx_file, other, n_clips=3)


def test_static_batch_export_rejects_other_batches(tmp_path, tiny_model_mod):
    path = export_onnx(tiny_model_mod, tmp_path / "static.onnx", batch=2, dynamic_batch=False)
    be = load_backend("onnxruntime", path)
    assert be.run(random_clips(2, frames=4, size=32)).shape == (2, 7)
    with pytest.raises(BackendError, match="fixed at 2"):
        be.run(random_clips(1, frames=4, size=32))


def test_dynamic_frames_export_runs_other_clip_lengths(tmp_path, tiny_model_mod):
    path = export_onnx(tiny_model_mod, tmp_path / "dynT.onnx", dynamic_frames=True, simplify=False)
    x = random_clips(1, frames=6, size=32)
    got = load_backend("onnxruntime", path).run(x)
    with torch.inference_mode():
        ref = tiny_model_mod(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_odd_sizes_export_exactly(tmp_path):
    """Odd feature maps exercise conv padding and the ceil-mode AvgPool shortcut on the runtimes."""
    model = tiny_model(size=35, frames=3)
    path = export_onnx(model, tmp_path / "odd.onnx")
    assert verify_artifact(path, model, n_clips=2).passed
    xml = export_openvino(path, tmp_path / "odd.xml")
    assert verify_artifact(xml, model, backend="openvino", n_clips=2).passed


def test_bad_opset_is_refused_and_nothing_is_written(tmp_path, tiny_model_mod):
    with pytest.raises(ExportError, match="opset"):
        export_onnx(tiny_model_mod, tmp_path / "old.onnx", opset=13)
    assert list(tmp_path.iterdir()) == []


def test_openvino_ir_fp32_and_fp16_from_module(tmp_path, tiny_model_mod):
    xml = export_openvino(tiny_model_mod, tmp_path / "m.xml")
    x16 = export_openvino(tiny_model_mod, tmp_path / "m16.xml", compress_fp16=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "m16.bin", "m16.xml"]
    # fp16 weights: about half the bytes
    assert (tmp_path / "m16.bin").stat().st_size < 0.6 * (tmp_path / "m.bin").stat().st_size
    assert verify_artifact(xml, tiny_model_mod, backend="openvino", n_clips=3).passed
    r16 = verify_artifact(x16, tiny_model_mod, backend="openvino", precision="fp16", n_clips=3)
    assert r16.passed and r16.top1_agreement == 1.0
    assert load_backend("openvino", xml).metadata["model_name"] == "e3d_tiny"


def test_openvino_export_needs_xml_suffix(tmp_path, onnx_file):
    with pytest.raises(ExportError, match=r"must end in \.xml"):
        export_openvino(onnx_file, tmp_path / "m.ir")
