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
import sys

from e3d_export.tensorrt import TRT_SUPPORTED_OPS, cuda_status, engine_sidecar_path, read_engine_sidecar
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


# ---- precision-carrying ONNX: what TensorRT builds strongly typed engines from ----------
@pytest.fixture(scope="module")
def precision_onnx(tmp_path_factory, tiny_model_mod):
    from e3d_export import export_onnx_fp16, quantize_onnx_int8, random_clips

    d = tmp_path_factory.mktemp("prec")
    fp32 = export_onnx(tiny_model_mod, d / "model.onnx")
    fp16 = export_onnx_fp16(fp32, d / "model_fp16.onnx")
    int8 = quantize_onnx_int8(fp32, d / "model_int8_trt.onnx", random_clips(8, frames=4, size=32, seed=1),
                              for_tensorrt=True)
    return {"fp32": fp32, "fp16": fp16, "int8": int8}


def test_int8_onnx_is_in_the_qdq_form_tensorrt_takes(precision_onnx):
    """Symmetric int8, zero points 0, per-channel weights on axis 0, float biases."""
    import onnx
    from onnx import numpy_helper

    from e3d_export import onnx_precision

    m = onnx.load(str(precision_onnx["int8"]))
    inits = {i.name: i for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    assert check_trt_support(m)["supported"], check_trt_support(m)["problems"]
    assert onnx_precision(m) == "int8"
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for n in qdq:
        zp = inits[n.input[2]]
        assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any(), n.name
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = prod[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        w, scale = inits[dq.input[0]], numpy_helper.to_array(inits[dq.input[1]])
        assert w.data_type == TensorProto.INT8 and numpy_helper.to_array(w).min() >= -127
        assert scale.shape == (w.dims[0],) and {a.name: a.i for a in dq.attribute}.get("axis", 1) == 0
        if len(conv.input) > 2:
            assert conv.input[2] in inits and inits[conv.input[2]].data_type == TensorProto.FLOAT


def test_fp16_onnx_keeps_float32_io(precision_onnx):
    import onnx

    from e3d_export import onnx_precision

    m = onnx.load(str(precision_onnx["fp16"]))
    assert onnx_precision(m) == "fp16" and check_trt_support(m)["supported"]
    assert {v.type.tensor_type.elem_type for v in list(m.graph.input) + list(m.graph.output)} == {TensorProto.FLOAT}
    assert all(i.data_type != TensorProto.FLOAT for i in m.graph.initializer if len(i.dims) > 1)


def test_ort_cpu_int8_form_is_flagged_for_tensorrt(tmp_path, precision_onnx):
    from e3d_export import quantize_onnx_int8, random_clips

    cpu = quantize_onnx_int8(precision_onnx["fp32"], tmp_path / "cpu.onnx", random_clips(4, frames=4, size=32))
    problems = check_trt_support(cpu)["problems"]
    assert any("UINT8" in p for p in problems) and any("INT32" in p for p in problems)


def test_check_flags_what_tensorrt_rejects_in_qdq():
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp_u8 = numpy_helper.from_array(np.array(0, np.uint8), "zpu")
    b32 = numpy_helper.from_array(np.arange(4, dtype=np.int32), "b32")
    q = helper.make_node("QuantizeLinear", ["x", "s", "zpu"], ["q"], name="q_u8")
    q_none = helper.make_node("QuantizeLinear", ["x", "s"], ["q2"], name="q_nozp")
    dq = helper.make_node("DequantizeLinear", ["b32", "s"], ["y"], name="dq_bias")
    problems = check_trt_support(_graph([q, q_none, dq], [s, zp_u8, b32]))["problems"]
    assert any("q_u8" in p and "UINT8" in p for p in problems)
    assert any("q_nozp" in p and "uint8" in p for p in problems)
    assert any("dq_bias" in p and "INT32" in p and "QuantizeBias=False" in p for p in problems)


# ---- the build and the runtime against a recording double (NOT TensorRT) -------------
import trt_double  # noqa: E402


@pytest.mark.parametrize("major", [10, 11])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_is_strongly_typed_from_the_onnx_precision(monkeypatch, tmp_path, precision_onnx, major, precision):
    rec = trt_double.install(monkeypatch, major)
    engine = build_trt_engine(precision_onnx[precision], tmp_path / "m.engine", batch=(1, 2, 8),
                              timing_cache=tmp_path / "timing.cache")
    calls = dict((name, args) for name, args in rec.calls)
    # 10: strong typing is opt-in; 11: always on, the flag deprecated, so nothing is passed
    assert calls["Builder.create_network"] == ((1 << 1,) if major == 10 else (0,))
    assert "IBuilderConfig.set_flag" not in rec.names()  # no precision flags at all
    tf32 = sys.modules["tensorrt"].BuilderFlag.TF32
    assert ("IBuilderConfig.clear_flag", (tf32,)) in rec.calls
    built_flags = calls["Builder.build_serialized_network"][0]
    assert tf32 not in built_flags
    assert calls["IOptimizationProfile.set_shape"] == ("clips", (1, 3, 4, 32, 32), (2, 3, 4, 32, 32), (8, 3, 4, 32, 32))
    assert rec.names().index("IBuilderConfig.add_optimization_profile") < rec.names().index(
        "Builder.build_serialized_network")
    side = read_engine_sidecar(engine)
    assert side["precision"] == precision and side["strongly_typed"] and side["tf32"] is False
    assert side["tensorrt_version"].startswith(str(major)) and side["io"]["logits"]["dtype"] == "float32"
    assert (tmp_path / "timing.cache").read_bytes() == b"timing-cache"


def test_build_checks_profile_io_dtype_and_parser(monkeypatch, tmp_path, precision_onnx):
    from e3d_zoo.errors import ExportError

    trt_double.install(monkeypatch, 11, profile_index=-1)
    with pytest.raises(ExportError, match="rejected the optimization profile"):
        build_trt_engine(precision_onnx["fp32"], tmp_path / "a.engine")
    trt_double.install(monkeypatch, 11, input_dtype="HALF")
    with pytest.raises(ExportError, match="input 'clips' is .*HALF.*float32 clips"):
        build_trt_engine(precision_onnx["fp32"], tmp_path / "b.engine")
    trt_double.install(monkeypatch, 10, parse_ok=False)
    with pytest.raises(ExportError, match="ONNX parser failed: In node 3"):
        build_trt_engine(precision_onnx["fp32"], tmp_path / "c.engine")
    trt_double.install(monkeypatch, 10, build_ok=False)
    with pytest.raises(ExportError, match="failed to build an engine"):
        build_trt_engine(precision_onnx["fp32"], tmp_path / "d.engine")
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.parametrize("major", [9, 12])
def test_unsupported_tensorrt_versions_name_the_range(monkeypatch, tmp_path, precision_onnx, major):
    from e3d_zoo.runtime import load_backend

    trt_double.install(monkeypatch, major)
    with pytest.raises(BackendError, match=r"TensorRT 1?\d\.4\.0\.26 is installed.*10\.x and 11\.x.*tensorrt>=10,<12"):
        build_trt_engine(precision_onnx["fp32"], tmp_path / "m.engine")
    with pytest.raises(BackendError, match="tensorrt>=10,<12"):
        load_backend("tensorrt", tmp_path / "m.engine")


@pytest.mark.parametrize("major", [10, 11])
def test_backend_runs_stream_ordered_and_returns_the_engine_logits(monkeypatch, tmp_path, precision_onnx,
                                                                 tiny_model_mod, major):
    from e3d_export import random_clips, reference_logits
    from e3d_zoo.runtime import load_backend

    rec = trt_double.install(monkeypatch, major)
    engine = build_trt_engine(precision_onnx["fp32"], tmp_path / "m.engine", batch=(1, 1, 4))
    be = load_backend("tensorrt", engine)
    x = random_clips(3, frames=4, size=32)
    start = len(rec.calls)
    got = be.run(x)
    np.testing.assert_allclose(got, reference_logits(tiny_model_mod, x), atol=1e-4)
    seq = [(n, a) for n, a in rec.calls[start:] if not n.startswith("cudaMalloc")]
    stream = be.stream
    kinds = sys.modules["cuda.bindings.runtime"].cudaMemcpyKind
    assert seq == [
        ("IExecutionContext.set_input_shape", ("clips", (3, 3, 4, 32, 32))),
        ("cudaMemcpyAsync", (kinds.cudaMemcpyHostToDevice, stream)),
        ("IExecutionContext.set_tensor_address", ("clips",)),
        ("IExecutionContext.set_tensor_address", ("logits",)),
        ("IExecutionContext.execute_async_v3", (stream,)),
        ("cudaMemcpyAsync", (kinds.cudaMemcpyDeviceToHost, stream)),
        ("cudaStreamSynchronize", (stream,)),
    ]
    with pytest.raises(BackendError, match=r"outside the engine's optimization profile \(min \(1, 3, 4, 32, 32\), max \(4"):
        be.run(random_clips(5, frames=4, size=32))
    be.close()


def test_export_trt_builds_one_verified_engine_per_precision(monkeypatch, tmp_path, tiny_model_mod):
    from e3d_export.reverify import verify_folder

    trt_double.install(monkeypatch, 11)
    m = export(tiny_model_mod, tmp_path / "out", trt=True, fp16=True, int8=True, n_clips=2,
               n_calibration=8, threads=1)
    engines = {k: v for k, v in m["artifacts"].items() if v["format"] == "tensorrt-engine"}
    assert {k: (v["file"], v["precision"], v["from"]) for k, v in engines.items()} == {
        "tensorrt": ("model.engine", "fp32", "model.onnx"),
        "tensorrt_fp16": ("model_fp16.engine", "fp16", "model_fp16.onnx"),
        "tensorrt_int8": ("model_int8.engine", "int8", "model_int8_trt.onnx")}
    by_name = {r["name"]: r for r in m["verification"]}
    assert all(by_name[k]["passed"] and by_name[k]["backend"] == "tensorrt" for k in engines)
    report = verify_folder(tmp_path / "out", threads=1)
    assert report["ok"] and {r["name"] for r in report["checks"]["artifacts"] if r["backend"] == "tensorrt"} == set(engines)


def test_tensorrt_backend_imports_neither_torch_nor_tensorrt():
    import subprocess
    import textwrap

    # the backend lives in the torch-free e3d_runtime (issue 16): import it with torch blocked
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "timm"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import e3d_runtime.backends.tensorrt_backend as tb
        assert "tensorrt" not in sys.modules
        ok, why = tb.TensorRTBackend.availability()
        assert not any(m.split(".")[0] in ("torch", "timm") for m in sys.modules)
        print(ok, why)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("False")
