"""TensorRT, tested up to the point a GPU is needed.

What runs here: the static check of exported ONNX graphs against onnx-tensorrt's
operator support matrix, and the fail-early behaviour without tensorrt/CUDA. The
engine build and the TensorRT backend need an NVIDIA GPU and are unverified here.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from e3d_export import build_trt_engine, check_trt_support, export, export_onnx, lower_to_2d
from e3d_export.tensorrt import TRT_SUPPORTED_OPS, cuda_status, engine_sidecar_path
from e3d_zoo.errors import BackendError, MissingDependencyError

try:
    import tensorrt  # noqa: F401

    HAVE_TRT = cuda_status()[0]
except ImportError:
    HAVE_TRT = False


def _graph(nodes, inits=(), in_shape=(1, 3, 8, 8), out_shape=None, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_exported_3d_and_lowered_2d_graphs_pass_the_parser_check(tmp_path, tiny_model_mod):
    p3 = export_onnx(tiny_model_mod, tmp_path / "m.onnx")
    p2 = export_onnx(lower_to_2d(tiny_model_mod), tmp_path / "m2d.onnx")
    for p in (p3, p2):
        report = check_trt_support(p)
        assert report["supported"], report["problems"]
        assert set(report["ops"]) <= TRT_SUPPORTED_OPS and report["opset"] == 17


def test_unsupported_op_is_named():
    m = _graph([helper.make_node("Unique", ["x"], ["y"], name="uniq")])
    report = check_trt_support(m)
    assert not report["supported"]
    assert any("uniq" in p and "not supported" in p for p in report["problems"])


def test_unknown_and_custom_domain_ops_are_reported():
    n1 = helper.make_node("FancyOp", ["x"], ["t"], name="fancy")
    n2 = helper.make_node("Gelu", ["t"], ["y"], name="cust", domain="com.example")
    m = _graph([n1, n2])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    problems = check_trt_support(m)["problems"]
    assert any("fancy" in p and "support matrix" in p for p in problems)
    assert any("cust" in p and "plugin" in p for p in problems)


def test_conv_restrictions_weights_must_be_initializers_and_1d_conv_is_rejected():
    w = numpy_helper.from_array(np.ones((4, 3, 3), np.float32), "w1d")
    conv1d = helper.make_node("Conv", ["x", "w1d"], ["y"], name="c1d", pads=[1, 1])
    report = check_trt_support(_graph([conv1d], [w], in_shape=(1, 3, 16)))
    assert any("c1d" in p and "only 2D or 3D" in p for p in report["problems"])
    g = helper.make_graph([helper.make_node("Conv", ["x", "wdyn"], ["y"], name="cdyn")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 8, 8)),
                           helper.make_tensor_value_info("wdyn", TensorProto.FLOAT, (4, 3, 1, 1))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert any("cdyn" in p and "initializer" in p for p in check_trt_support(m)["problems"])


def test_nonzero_zero_point_in_qdq_is_flagged():
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, np.uint8), "zp")
    q = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q")
    dq = helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")
    report = check_trt_support(_graph([q, dq], [s, zp]))
    assert sum("zero point must be 0" in p for p in report["problems"]) == 2


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt and CUDA present: the fail-early path does not apply")
def test_engine_build_fails_before_any_work_naming_the_trt_extra(tmp_path, tiny_model_mod):
    onnx_path = export_onnx(tiny_model_mod, tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    with pytest.raises((MissingDependencyError, BackendError)) as info:
        build_trt_engine(onnx_path, engine)
    assert "e3d-zoo[trt]" in str(info.value) or "CUDA" in str(info.value)
    assert not engine.exists() and not engine_sidecar_path(engine).exists()
    # the whole export fails first too, before writing anything
    with pytest.raises((MissingDependencyError, BackendError)):
        export(tiny_model_mod, tmp_path / "out", trt=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not HAVE_TRT, reason="needs tensorrt and a CUDA GPU (unavailable on this project's machines)")
def test_engine_build_and_run_on_gpu(tmp_path, tiny_model_mod):  # pragma: no cover - GPU only
    from e3d_zoo.runtime import load_backend
    from e3d_export import verify_backend, random_clips

    onnx_path = export_onnx(tiny_model_mod, tmp_path / "m.onnx")
    engine = build_trt_engine(onnx_path, tmp_path / "m.engine", batch=(1, 2, 4),
                              timing_cache=tmp_path / "timing.cache")
    assert engine_sidecar_path(engine).is_file() and (tmp_path / "timing.cache").is_file()
    be = load_backend("tensorrt", engine)
    r = verify_backend(be, tiny_model_mod, random_clips(4, frames=4, size=32))
    assert r.passed
