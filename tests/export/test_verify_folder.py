"""``e3d-export --verify FOLDER`` and the criteria behind it.

The folder is re-verified against the reference clips and PyTorch logits stored in it,
on this machine's runtimes, without torch; the recorded source is re-created when torch
and the source are here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tiny_arch import tiny_model
from e3d_export import criteria_for, export
from e3d_export.cli import main
from e3d_export.criteria import agrees, compare, reference_problems
from e3d_export.manifest import file_table, load_manifest, write_manifest
from e3d_export.reverify import verify_folder
from e3d_zoo.errors import VerificationError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def arch_folder(tmp_path_factory, tiny_arch_file_mod):
    out = tmp_path_factory.mktemp("verify") / "tiny"
    export(str(tiny_arch_file_mod), out, openvino=True, n_clips=3, threads=1)
    return out


@pytest.fixture(scope="module")
def tiny_arch_file_mod(tmp_path_factory):
    from tiny_arch import make_tiny_spec

    return make_tiny_spec().save(tmp_path_factory.mktemp("arch") / "e3d_tiny.json")


# ---- criteria ---------------------------------------------------------------------------
def test_an_artifact_returning_zeros_fails_however_small_the_logits():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 400)) * 2e-5  # an untrained E3D-S's logit scale
    a = compare(ref, np.zeros_like(ref), criteria_for("fp32"))
    assert not a.passed and a.max_rel_err == pytest.approx(1.0)
    assert any("max_rel_err" in f for f in a.failed) and any("cosine" in f for f in a.failed)
    assert agrees(ref, ref * (1 + 1e-7), "fp32") and not agrees(ref, ref * 1.01, "fp32")


def test_criteria_are_scale_invariant_and_near_ties_do_not_count():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 10))
    got = ref + rng.standard_normal(ref.shape) * 1e-6
    for scale in (1e-6, 1.0, 1e6):
        assert compare(ref * scale, got * scale, criteria_for("fp32")).passed
    tie = np.array([[1.0, 1.0 - 1e-7, 0.0, -1.0]])
    swapped = np.array([[1.0 - 1e-7, 1.0, 0.0, -1.0]])
    a = compare(tie, swapped, criteria_for("fp32"))
    assert a.top1_agreement == 1.0 and a.passed


def test_reference_that_ignores_its_input_is_refused(tmp_path):
    model = tiny_model()
    with __import__("torch").no_grad():
        model.classifier.weight.zero_()  # every clip now gives the classifier's bias
        model.classifier.bias.normal_()
    assert reference_problems(np.tile(np.arange(7.0), (4, 1)))
    with pytest.raises(VerificationError, match="ignores its input.*randomize the BatchNorm"):
        export(model, tmp_path / "e", n_clips=2)
    assert not (tmp_path / "e").exists()


def test_headline_registered_name_gets_trained_like_statistics_and_zeros_cannot_pass(tmp_path):
    """`e3d-export e3d_s` (random weights) verifies on logits that can fail."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "e3d_s"
    m = export("e3d_s", out, frames=4, size=64, n_clips=2, threads=1)
    src = m["source"]
    assert src["seed"] == 0 and src["randomized_statistics"] and "random initialization" in src["weights"]
    logits = np.load(out / "reference.npz")["logits"]
    assert np.abs(logits).max() > 0.1 and not reference_problems(logits)
    # the registered name + seed re-creates exactly the exported weights
    from e3d_export.reverify import load_reference
    from e3d_export.source import check_source

    manifest = load_manifest(out)
    source = check_source(out, manifest, *load_reference(out, manifest))
    assert source["status"] == "passed" and source["max_abs_err"] == 0.0
    # an artifact returning zeros: the classifier's weights and bias zeroed in the ONNX itself
    model = onnx.load(str(out / "model.onnx"))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    for init in model.graph.initializer:
        if init.name in gemm.input[1:]:
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(out / "model.onnx"))
    report = verify_folder(out, threads=1)
    row = report["checks"]["artifacts"][0]
    assert row["status"] == "failed" and row["max_rel_err"] == pytest.approx(1.0)


# ---- the CLI ------------------------------------------------------------------------------
def test_verify_cli_json_reports_every_check(arch_folder, capsys):
    assert main(["--verify", str(arch_folder), "--threads", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    checks = doc["checks"]
    assert checks["files"]["status"] == "passed" and checks["reference"]["clips"] == 3
    assert {r["name"]: r["status"] for r in checks["artifacts"]} == {"onnx": "passed", "openvino": "passed"}
    assert checks["artifacts"][0]["criteria"] == criteria_for("fp32").to_dict()
    # the source (an arch file + seed 0) is re-created and reproduces the stored logits
    assert checks["source"]["status"] == "passed" and "seed 0" in checks["source"]["how"]


def test_verify_cli_text_and_skipped_runtime(arch_folder, tmp_path, capsys):
    import shutil

    folder = tmp_path / "f"
    shutil.copytree(arch_folder, folder)
    (folder / "model.engine").write_bytes(b"not an engine")  # as if built on a GPU box
    manifest = load_manifest(folder)
    manifest["artifacts"]["tensorrt"] = {"file": "model.engine", "format": "tensorrt-engine",
                                         "precision": "fp32"}
    manifest["files"] = file_table(folder)
    write_manifest(folder, manifest)
    assert main(["--verify", str(folder), "--threads", "1", "--no-source-check"]) == 0
    out = capsys.readouterr().out
    assert "passed   model.onnx" in out and "skipped  model.engine" in out
    assert "tensorrt is not usable here" in out and "source   skipped: --no-source-check" in out


def test_verify_cli_errors_are_one_line(arch_folder, tmp_path, capsys):
    import shutil

    assert main(["--verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("e3d-export: error:") and "no manifest.json" in err and "\n" not in err

    folder = tmp_path / "tampered"
    shutil.copytree(arch_folder, folder)
    data = dict(np.load(folder / "reference.npz"))
    np.savez(folder / "reference.npz", clips=data["clips"], logits=data["logits"] * 1.5)
    assert main(["--verify", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "reference.npz: sha256 differs" in err and "\n" not in err and "Traceback" not in err

    old = tmp_path / "old"
    shutil.copytree(arch_folder, old)
    manifest = load_manifest(old)
    del manifest["reference"]
    write_manifest(old, manifest)
    assert main(["--verify", str(old), "--json"]) == 2
    assert "records no reference data" in capsys.readouterr().err


def test_verify_runs_without_torch(arch_folder):
    """The --verify command (e3d_runtime.verify) imports no torch/timm: run it with both made
    unimportable; the source check then says why it was skipped. The old import path
    e3d_export.reverify is the same module as e3d_runtime.reverify."""
    code = textwrap.dedent(f"""
        import importlib.abc, io, json, sys
        from contextlib import redirect_stdout
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "timm", "torchvision"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import e3d_export.reverify, e3d_runtime.reverify
        assert e3d_export.reverify is e3d_runtime.reverify
        from e3d_runtime.verify import main
        out = io.StringIO()
        with redirect_stdout(out):
            rc = main(["--verify", {str(arch_folder)!r}, "--threads", "1", "--json"])
        report = json.loads(out.getvalue())
        assert rc == 0 and report["ok"], report
        assert not any(m.split(".")[0] in ("torch", "timm", "e3d_zoo") for m in sys.modules)
        print("verified", [r["status"] for r in report["checks"]["artifacts"]],
              report["checks"]["source"]["reason"])
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=str(REPO), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "verified ['passed', 'passed'] torch not installed here" in r.stdout


def test_checkpoint_source_is_checked_by_sha256(tmp_path, tiny_arch_file_mod, capsys):
    import torch

    ckpt = tmp_path / "w.pth"
    torch.save({"model": tiny_model().state_dict()}, ckpt)
    out = tmp_path / "e"
    export(ckpt, out, arch=str(tiny_arch_file_mod), n_clips=2, threads=1)
    assert main(["--verify", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checks"]["source"]["status"] == "passed"
    torch.save({"model": tiny_model(seed=4).state_dict()}, ckpt)  # the checkpoint changed since
    assert main(["--verify", str(out), "--json"]) == 0  # the artifacts still match their reference
    source = json.loads(capsys.readouterr().out)["checks"]["source"]
    assert source["status"] == "skipped" and "sha256 mismatch" in source["reason"]
