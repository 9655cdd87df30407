"""The runtime interface on every backend that runs here: ONNX Runtime, OpenVINO (real
runtimes, real artifacts exported from a tiny E3D), and TensorRT's fail-early path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e3d_export import export_onnx, export_openvino
from e3d_zoo.errors import BackendError, E3DError, MissingDependencyError
from e3d_zoo.runtime import available_backends, backend_class, load_backend


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_model_mod):
    d = tmp_path_factory.mktemp("rt")
    onnx_path = export_onnx(tiny_model_mod, d / "tiny.onnx", frames=4, size=32)
    xml_path = export_openvino(onnx_path, d / "tiny.xml")
    return {"onnxruntime": onnx_path, "openvino": xml_path, "torch": tiny_model_mod}


@pytest.fixture(scope="module")
def clips():
    return np.random.default_rng(1).standard_normal((3, 3, 4, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def torch_logits(tiny_model_mod, clips):
    with torch.inference_mode():
        return tiny_model_mod(torch.from_numpy(clips)).numpy()


@pytest.mark.parametrize("name", ["torch", "onnxruntime", "openvino"])
def test_backend_runs_batches_and_matches_pytorch(name, artifacts, clips, torch_logits):
    be = load_backend(name, artifacts[name], threads=1)
    assert be.name == name
    out = be.run(clips)  # dynamic batch: 3 clips in one call
    assert out.dtype == np.float32 and out.shape == (3, 7)
    assert np.abs(torch_logits).max() > 0.1  # logits are O(1), so the bound below is meaningful
    np.testing.assert_allclose(out, torch_logits, atol=1e-4, rtol=1e-4)
    single = be.run(clips[:1])
    np.testing.assert_allclose(single, torch_logits[:1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["torch", "onnxruntime", "openvino"])
def test_backend_describe_and_timing(name, artifacts, clips):
    be = load_backend(name, artifacts[name], threads=1)
    d = be.describe()
    assert d["backend"] == name and d["threads"] == 1 and d["runtime_version"]
    stats = be.time(clips[:1], warmup=1, runs=3)
    assert stats.runs == 3 and stats.median_ms > 0 and stats.batch == 1


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_backend_exposes_export_metadata(name, artifacts):
    be = load_backend(name, artifacts[name])
    assert be.metadata["input_layout"] == "NCTHW"
    assert be.metadata["model_name"] == "e3d_tiny"
    assert be.metadata["frames"] == "4"


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_backend_rejects_wrong_clip_shape_with_clear_error(name, artifacts):
    be = load_backend(name, artifacts[name])
    with pytest.raises(BackendError, match=r"expected input shaped"):
        be.run(np.zeros((1, 3, 5, 32, 32), np.float32))


@pytest.mark.parametrize("name,suffix", [("onnxruntime", ".onnx"), ("openvino", ".xml")])
def test_backend_missing_file_is_backend_error(name, suffix, tmp_path):
    with pytest.raises(BackendError, match="no such"):
        load_backend(name, tmp_path / f"missing{suffix}")


def test_onnxruntime_corrupt_file_is_backend_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(BackendError, match="cannot load"):
        load_backend("ort", bad)


def test_openvino_ir_without_bin_is_backend_error(artifacts, tmp_path):
    lone = tmp_path / "lone.xml"
    lone.write_text(artifacts["openvino"].read_text())
    with pytest.raises(BackendError, match=r"lone\.bin is missing"):
        load_backend("openvino", lone)


def test_openvino_runs_onnx_directly(artifacts, clips, torch_logits):
    be = load_backend("ov", artifacts["onnxruntime"], threads=1)
    np.testing.assert_allclose(be.run(clips), torch_logits, atol=1e-4, rtol=1e-4)


def test_available_backends_lists_the_real_runtimes():
    names = available_backends()
    assert {"torch", "onnxruntime", "openvino"} <= set(names)


def test_tensorrt_fails_early_naming_the_trt_extra(tmp_path):
    """No tensorrt/CUDA here: loading must fail before reading the engine, naming [trt]."""
    ok, why = backend_class("tensorrt").availability()
    if ok:
        pytest.skip("tensorrt and CUDA are present; the fail-early path does not apply")
    engine = tmp_path / "model.engine"  # does not even exist: the dependency check comes first
    with pytest.raises((BackendError, MissingDependencyError)) as info:
        load_backend("tensorrt", engine)
    assert isinstance(info.value, E3DError)
    msg = str(info.value)
    assert "e3d-zoo[trt]" in msg or "CUDA" in msg
    assert "tensorrt" not in available_backends()


def test_openvino_compile_cache_is_reused_with_identical_results(artifacts, clips, tmp_path):
    first = load_backend("openvino", artifacts["openvino"], threads=1, cache_dir=tmp_path)
    blobs = sorted(p.name for p in tmp_path.iterdir())
    assert blobs, "OpenVINO wrote no compiled blob into cache_dir"
    second = load_backend("openvino", artifacts["openvino"], threads=1, cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == blobs  # imported, not compiled again
    np.testing.assert_array_equal(first.run(clips), second.run(clips))


def test_onnxruntime_runs_frame_shifts_in_its_blocked_layout(tmp_path):
    """The lowered graph's frame shifts keep ONNX Runtime's NCHWc layout (no reorder pair
    around every temporal conv): same outputs to the bit, fewer reorder nodes."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from e3d_export import export_onnx, lower_to_2d
    from e3d_runtime.backends.base import load_backend
    from e3d_runtime.machine import cpu_info
    from tiny_arch import tiny_model

    path = export_onnx(lower_to_2d(tiny_model()), tmp_path / "tiny_2d.onnx", frames=4, size=32)
    folded = load_backend("onnxruntime", path, threads=1)
    plain = load_backend("onnxruntime", path, threads=1, fold_reorders=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 32, 32), dtype=np.float32)
    assert np.array_equal(folded.run(x), plain.run(x))
    assert folded.metadata == plain.metadata and folded.metadata.get("lowered_2d")
    assert plain.nchwc_folded is None and folded.describe()["nchwc_reorders_folded"] == folded.nchwc_folded
    if "avx2" in cpu_info()["flags"]:  # MLAS has its NCHWc kernels on x86 with AVX2 and up
        assert folded.nchwc_folded >= 1  # the tiny net's 16- and 32-channel temporal convs


def test_openvino_backend_imports_the_runtime_without_the_model_converter(artifacts):
    """e3d-infer's start-up skips OpenVINO's converter (ovc and its telemetry); whoever
    needs ``openvino.convert_model`` later in the same process still gets it."""
    pytest.importorskip("openvino")
    import subprocess
    import sys

    xml = artifacts["openvino"]
    code = (
        "import sys\n"
        "from e3d_runtime.backends.base import load_backend\n"
        f"be = load_backend('openvino', {str(xml)!r}, threads=1)\n"
        "assert 'openvino.tools.ovc' not in sys.modules, 'converter imported'\n"
        "import openvino\n"
        "from openvino import convert_model\n"
        "assert callable(convert_model) and openvino.convert_model is convert_model\n"
        "assert 'openvino.tools.ovc' in sys.modules\n"
        "print(be.run(__import__('numpy').zeros((1, 3, 4, 32, 32), 'float32')).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(1, 7)"
