"""The torch-free runtime package in the full environment: one module per old path, the
manifest's preprocess section, export folders as artifacts, the e3d-export dispatcher, and
start-up without torch (a fresh interpreter per check)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import e3d_runtime
from e3d_runtime.errors import ConfigError, E3DError, ExportError
from e3d_runtime.manifest import load_manifest, preprocess_cfg, preprocess_section

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def test_old_import_paths_are_the_same_modules():
    import e3d_zoo.atomic
    import e3d_zoo.cli._common
    import e3d_zoo.errors
    import e3d_zoo.runtime.openvino_backend
    import e3d_zoo.video.pipeline
    import e3d_runtime.atomic
    import e3d_runtime.backends.openvino_backend
    import e3d_runtime.cli._common
    import e3d_runtime.video.pipeline

    assert e3d_zoo.errors is e3d_runtime.errors and e3d_zoo.atomic is e3d_runtime.atomic
    assert e3d_zoo.runtime.openvino_backend is e3d_runtime.backends.openvino_backend
    assert e3d_zoo.video.pipeline is e3d_runtime.video.pipeline
    assert e3d_zoo.cli._common is e3d_runtime.cli._common
    import e3d_export.criteria
    import e3d_export.reverify
    import e3d_runtime.criteria
    import e3d_runtime.reverify

    assert e3d_export.criteria is e3d_runtime.criteria and e3d_export.reverify is e3d_runtime.reverify
    # one hierarchy: an error raised by the runtime is caught as the zoo's
    with pytest.raises(e3d_zoo.errors.E3DError):
        raise e3d_runtime.errors.BackendError("x")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from e3d_export import export
    from tiny_arch import tiny_model

    model = tiny_model(num_classes=3, frames=4, size=32)
    model.pretrained_cfg = {**model.pretrained_cfg, "label_names": ["run", "walk", "jump"]}
    out = tmp_path_factory.mktemp("exp") / "tiny"
    export(model, out, openvino=True)
    return out


def test_export_manifest_carries_what_the_pipeline_needs(folder):
    section = load_manifest(folder)["preprocess"]
    assert section["num_frames"] == 4 and section["input_size"] == [3, 32, 32]
    assert section["labels"] == ["run", "walk", "jump"] and section["num_classes"] == 3
    assert section["frame_stride"] == 2 and section["interpolation"] == "bilinear"
    cfg = preprocess_cfg(section)
    assert cfg["label_names"] == ["run", "walk", "jump"] and cfg["mean"] == tuple(section["mean"])
    # writer and reader agree on every field
    assert preprocess_section(cfg, num_classes=3) == section


@pytest.mark.parametrize("change, field", [
    ({"version": 2}, "version"), ({"input_size": [3, 32]}, "input_size"),
    ({"mean": [0.5, 0.5]}, "mean"), ({"num_frames": "many"}, "num_frames"),
    ({"input_layout": "NTHWC"}, "input_layout"), ({"labels": "run"}, "labels")])
def test_bad_preprocess_section_is_named(folder, change, field):
    section = {**load_manifest(folder)["preprocess"], **change}
    with pytest.raises(ExportError, match=field):
        preprocess_cfg(section, "m.json")


def test_folder_artifact_follows_backend_and_manifest(folder):
    from e3d_runtime import VideoClassifier

    clf = VideoClassifier.from_artifact(folder)  # first installed runtime: OpenVINO
    assert clf.backend.name == "openvino" and clf.labels == ["run", "walk", "jump"]
    ort = VideoClassifier.from_artifact(folder, backend="ort")
    assert ort.backend.name == "onnxruntime" and ort.backend.path.name == "model.onnx"
    assert ort.sampling == clf.sampling and ort.transform == clf.transform
    # one file of the folder: preprocessing from the manifest beside it
    one = VideoClassifier.from_artifact(folder / "model.xml")
    assert one.labels == clf.labels and one.cfg == clf.cfg
    with pytest.raises(ExportError, match="tensorrt"):
        VideoClassifier.from_artifact(folder, backend="tensorrt")
    with pytest.raises(ConfigError, match="no such export folder"):
        VideoClassifier.from_artifact(folder / "missing")


def test_e3d_export_dispatcher_checks_and_verifies_without_exporting(folder, capsys):
    from e3d_runtime.cli.export import main

    assert main(["--check", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"x")
    try:
        assert main(["--check", str(folder)]) == 2
        assert "model.onnx: sha256 differs" in capsys.readouterr().err
    finally:
        (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:-1])
    # --verify: the dispatcher runs the one verification command (e3d_runtime.verify)
    assert main(["--verify", str(folder), "--backend", "onnxruntime", "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["checks"]["artifacts"]}
    assert report["ok"] and rows["onnx"]["status"] == "passed"
    assert rows["openvino"]["status"] == "skipped" and "--backend onnxruntime" in rows["openvino"]["reason"]
    # an nn.Module source cannot be re-created from the manifest: said, not failed
    assert report["checks"]["source"]["status"] == "skipped"
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"x")
    try:
        assert main(["--verify", str(folder), "--threads", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("e3d-export: error:") and "model.onnx: sha256 differs" in err
        assert "\n" not in err
    finally:
        (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:-1])


def test_missing_runtime_names_the_extra_to_install():
    from e3d_runtime.errors import MissingDependencyError

    err = MissingDependencyError("openvino", "openvino", "the OpenVINO backend")
    assert isinstance(err, E3DError) and "e3d-zoo[openvino]" in str(err)  # e3d_zoo is installed


def _loaded_after(code: str) -> list:
    probe = (code + "\nimport sys, json\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('torch', 'timm', 'torchvision', 'openvino', 'onnxruntime', 'av'))))")
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["e3d_runtime.cli.infer", "e3d_runtime.cli.export"])
def test_help_loads_no_heavy_module(module):
    """e3d-infer / e3d-export --help: no torch, no runtime, no decoder (start-up is product)."""
    code = (f"from {module} import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n")
    assert _loaded_after(code) == []


def test_runtime_package_imports_no_torch():
    code = ("import e3d_runtime, e3d_runtime.video.pipeline, e3d_runtime.video.streaming, "
            "e3d_runtime.backends.onnxruntime_backend, e3d_runtime.backends.openvino_backend, "
            "e3d_runtime.backends.tensorrt_backend, e3d_runtime.video.writers, e3d_runtime.verify")
    assert not [m for m in _loaded_after(code) if m.startswith(("torch", "timm"))]
    assert e3d_runtime.__version__
