"""export(): every format that runs here, verified, with a manifest; atomic on failure."""
from __future__ import annotations

import json

import pytest
import torch

from tiny_arch import tiny_model
from e3d_export import check_manifest, criteria_for, export
from e3d_export.manifest import sha256_file
from e3d_zoo.errors import ExportError, ModelNotFoundError, VerificationError, WeightsError


@pytest.fixture(scope="module")
def full_export(tmp_path_factory):
    model = tiny_model()
    out = tmp_path_factory.mktemp("full") / "tiny"
    manifest = export(model, out, onnx=True, openvino=True, lower_2d=True, int8=True, fp16=True,
                      n_clips=4, n_calibration=8, threads=1, benchmark_runs=2)
    return out, manifest


def test_every_local_format_is_written_and_verified(full_export):
    out, manifest = full_export
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model_2d.onnx", "model.xml", "model.bin", "model_fp16.xml", "model_fp16.onnx",
            "model_int8.onnx", "model_int8_trt.onnx", "model_int8.xml", "reference.npz", "manifest.json"} <= names
    assert set(manifest["artifacts"]) == {"onnx", "onnx_2d", "openvino", "openvino_fp16", "onnx_fp16",
                                          "int8_onnx", "int8_onnx_trt", "int8_openvino"}
    by_name = {r["name"]: r for r in manifest["verification"]}
    assert set(by_name) == {"onnx", "lowering_pytorch", "onnx_2d", "openvino", "openvino_fp16",
                            "onnx_fp16", "int8_onnx", "int8_onnx_trt", "int8_openvino"}
    assert all(r["passed"] and not r["failed"] for r in by_name.values())
    for fp32 in ("onnx", "onnx_2d", "openvino"):
        assert by_name[fp32]["max_rel_err"] <= 1e-4 and by_name[fp32]["precision"] == "fp32"
        assert by_name[fp32]["criteria"] == criteria_for("fp32").to_dict()
    assert by_name["lowering_pytorch"]["max_rel_err"] <= 1e-5
    assert manifest["artifacts"]["int8_onnx_trt"]["tensorrt_parser_check"]["supported"] is True
    assert manifest["artifacts"]["int8_onnx"]["tensorrt_parser_check"]["supported"] is False
    for reduced, key in (("int8_onnx", "int8"), ("int8_onnx_trt", "int8"), ("int8_openvino", "int8"), ("openvino_fp16", "fp16"),
                         ("onnx_fp16", "fp16")):
        assert by_name[reduced]["criteria"] == criteria_for(key).to_dict()
        assert manifest["artifacts"][reduced]["verify"]["criteria"] == key
    assert set(manifest["criteria"]) == {"fp32", "fp16", "int8"}
    assert manifest["latency"]["onnx_2d"]["runs"] == 2 and manifest["latency"]["onnx"]["median_ms"] > 0
    assert manifest["artifacts"]["int8_onnx"]["from"] == "model_2d.onnx"


def test_manifest_hashes_every_file_and_records_versions(full_export):
    out, manifest = full_export
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["files"] == manifest["files"]
    for name, entry in manifest["files"].items():
        assert sha256_file(out / name) == entry["sha256"]
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {"manifest.json"}
    v = manifest["versions"]
    assert v["torch"] == torch.__version__.split("+")[0] or v["torch"].startswith(torch.__version__[:4])
    assert v["onnxruntime"] and v["openvino"] and v["onnx"]
    assert manifest["input"]["shape"] == [1, 3, 4, 32, 32] and manifest["input"]["layout"] == "NCTHW"
    assert manifest["source"]["arch"]["name"] == "e3d_tiny"
    assert manifest["artifacts"]["onnx"]["tensorrt_parser_check"]["supported"] is True
    assert check_manifest(out)["schema"] == "e3d-export-manifest"


def test_check_manifest_detects_a_changed_file(tmp_path):
    out = tmp_path / "e"
    export(tiny_model(), out, n_clips=1)
    with open(out / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ExportError, match="model.onnx: sha256 differs"):
        check_manifest(out)


def test_failed_verification_leaves_the_previous_export_untouched(tmp_path):
    out = tmp_path / "e"
    export(tiny_model(), out, n_clips=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(VerificationError):
        export(tiny_model(seed=3), out, lower_2d=True, n_clips=2,
               criteria={"fp32": criteria_for("fp32", max_rel_err=1e-12)})  # impossible tolerance
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".e.lock", "e"]  # no staging left behind
    check_manifest(out)


def test_failed_first_export_leaves_nothing(tmp_path):
    with pytest.raises(VerificationError):
        export(tiny_model(), tmp_path / "new", n_clips=1,
               criteria={"fp32": criteria_for("fp32", max_rel_err=1e-12)})
    assert [p.name for p in tmp_path.iterdir()] == [".new.lock"]  # the (empty) lock file only


def test_arch_file_and_checkpoint_sources(tmp_path, tiny_arch_file):
    model = tiny_model(num_classes=4)
    ckpt = tmp_path / "w.pth"
    torch.save({"model": model.state_dict(), "classes": ["a", "b", "c", "d"]}, ckpt)
    m = export(ckpt, tmp_path / "from_ckpt", arch=str(tiny_arch_file), n_clips=2)
    assert m["source"]["kind"] == "checkpoint" and m["source"]["weights_sha256"] == sha256_file(ckpt)
    assert m["source"]["num_classes"] == 4
    from e3d_export import read_metadata

    assert read_metadata(tmp_path / "from_ckpt" / "model.onnx")["labels"] == ["a", "b", "c", "d"]
    m2 = export(str(tiny_arch_file), tmp_path / "from_arch", n_clips=1)
    assert m2["source"]["kind"] == "arch file" and "random" in m2["source"]["weights"]


def test_bad_sources_give_one_clear_error(tmp_path, tiny_arch_file):
    with pytest.raises(ModelNotFoundError, match="unknown model 'e3d_xx'"):
        export("e3d_xx", tmp_path / "a")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="unreadable checkpoint"):
        export(garbage, tmp_path / "b", arch=str(tiny_arch_file))
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"blocks.0.conv.weight": torch.zeros(1)}}, wrong)
    with pytest.raises(WeightsError, match="does not fit architecture"):
        export(wrong, tmp_path / "c", arch=str(tiny_arch_file))
    plain = tmp_path / "plain.pth"
    torch.save(tiny_model().state_dict(), plain)
    with pytest.raises(WeightsError, match="--arch"):
        export(plain, tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["e3d_tiny.json", "garbage.pth",
                                                                 "wrong.pth", "plain.pth"])


def test_verification_can_include_real_clips(tmp_path):
    """Extra clips (e.g. decoded from a video) join the random ones on both sides."""
    import numpy as np

    extra = np.random.default_rng(7).uniform(-2, 2, (2, 3, 4, 32, 32)).astype(np.float32)
    m = export(tiny_model(), tmp_path / "e", n_clips=1, extra_clips=extra)
    assert m["verification"][0]["clips"] == 3 and m["input"]["verification_clips"] == 3
    with pytest.raises(ExportError, match="extra clips"):
        export(tiny_model(), tmp_path / "f", extra_clips=extra[:, :, :2])


def test_save_pretrained_folder_source(tmp_path):
    hub = pytest.importorskip("e3d_zoo.hub")
    model = tiny_model(num_classes=3)
    folder = hub.save_pretrained(model, tmp_path / "pretrained", label_names=["x", "y", "z"])
    m = export(folder, tmp_path / "e", n_clips=2)
    assert m["source"]["kind"] == "pretrained folder" and m["source"]["num_classes"] == 3
    assert m["source"]["weights_sha256"] == sha256_file(folder / "model.safetensors")
    # the folder's weights, not random ones: the export reproduces this model's logits
    from e3d_export import random_clips, read_metadata
    from e3d_zoo.runtime import load_backend

    x = random_clips(2, frames=4, size=32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    got = load_backend("onnxruntime", tmp_path / "e" / "model.onnx").run(x)
    assert abs(got - ref).max() < 1e-4
    assert read_metadata(tmp_path / "e" / "model.onnx")["labels"] == ["x", "y", "z"]
