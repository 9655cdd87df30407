"""The edge install, for real: a fresh venv with only ``pip install ./runtime[...]`` (numpy,
PyAV, OpenVINO, ONNX Runtime; no torch, timm or CUDA), an export folder made by the full
environment copied into it, and ``e3d-infer`` on PyAV-encoded videos in file and stream
mode: the same records as the full environment, and torch never imported.

The venv is built once per test run (module fixture) from pip's package cache, pinned to
the versions installed here (same runtimes, so the same numbers); ~20 s on 2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

from e3d_zoo.video.pipeline import VideoClassifier  # noqa: E402
from e3d_zoo.video.writers import encode_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = "openvino,onnxruntime,video"
LABELS = [f"action_{i}" for i in range(7)]
# never in an edge install: the point of the separate distribution
HEAVY = ("torch", "torchvision", "timm", "triton", "e3d-zoo")


def _pins() -> str:
    """Constraints: the runtimes and their dependencies at the versions installed here."""
    names = ("numpy", "filelock", "openvino", "openvino-telemetry", "onnxruntime", "av", "pillow", "tqdm",
             "packaging", "flatbuffers", "protobuf", "sympy", "mpmath", "coloredlogs", "humanfriendly")
    lines = []
    for name in names:
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    (root / "pins.txt").write_text(_pins())
    # a clean copy of the distribution's sources: a build never writes into the checkout,
    # and no stale build/ or egg-info of a developer's tree ends up in the wheel
    src = shutil.copytree(ROOT / "runtime", root / "e3d-runtime-src",
                          ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "-q",
         "-c", str(root / "pins.txt"), f"{src}[{EXTRAS}]"],
        capture_output=True, text=True, timeout=600, cwd=root)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, timeout=120, check=True)
    installed = {d["name"].lower() for d in json.loads(listed.stdout)}
    heavy = sorted(n for n in installed if n in HEAVY or n.startswith(("nvidia-", "cuda-")))
    assert not heavy, f"the edge install pulled {heavy}"
    assert {"e3d-runtime", "numpy", "openvino", "onnxruntime", "av"} <= installed
    return {"root": root, "bin": env_dir / "bin", "python": python}


@pytest.fixture(scope="module")
def export_folder(tmp_path_factory):
    """An export made by the full environment: ONNX + OpenVINO IR of a tiny E3D with labels."""
    from e3d_export import export
    from tiny_arch import tiny_model

    model = tiny_model(num_classes=len(LABELS), frames=4, size=32)
    model.pretrained_cfg = {**model.pretrained_cfg, "label_names": LABELS}
    out = tmp_path_factory.mktemp("workstation") / "e3d_tiny"
    export(model, out, openvino=True)
    return out, model


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from .helpers import moving_bar

    folder = tmp_path_factory.mktemp("videos")
    return [encode_video(folder / "bar.mp4", moving_bar(45, 72, 96), fps=15.0),
            encode_video(folder / "bar_seed3.mkv", moving_bar(30, 60, 80, seed=3), fps=10.0)]


def _infer(exe: Path, *args: str, env=None) -> dict:
    p = subprocess.run([str(exe), *map(str, args), "--json", "--no-progress"], capture_output=True,
                       text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def _edge_env() -> dict:
    # what an edge box has: no PYTHONPATH into this checkout
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.mark.slow
def test_edge_install_runs_a_workstation_export_like_the_full_environment(edge, export_folder, videos):
    folder, model = export_folder
    box = edge["root"] / "box" / folder.name
    shutil.copytree(folder, box)  # "copy the folder to the edge box"
    env = _edge_env()

    check = subprocess.run([str(edge["bin"] / "e3d-export"), "--check", str(box)], capture_output=True,
                           text=True, timeout=120, env=env)
    assert check.returncode == 0 and "match manifest.json" in check.stdout, check.stderr

    full_exe = Path(sys.executable).parent / "e3d-infer"
    for mode in ("video", "stream"):
        edge_run = _infer(edge["bin"] / "e3d-infer", *videos, "--artifact", box, "--mode", mode,
                          "--threads", "1", env=env)
        full_run = _infer(full_exe, *videos, "--artifact", folder, "--mode", mode, "--threads", "1")
        assert edge_run["backend"]["backend"] == full_run["backend"]["backend"] == "openvino"
        edge_recs, full_recs = edge_run["records"], full_run["records"]
        assert [r["source"] for r in edge_recs] == [r["source"] for r in full_recs]
        assert len(edge_recs) == (2 if mode == "video" else len(full_recs)) and len(edge_recs) >= 2
        for e, f in zip(edge_recs, full_recs):
            assert [t["label"] for t in e["top"]] == [t["label"] for t in f["top"]]
            assert e["top"][0]["label"] in LABELS  # the manifest's labels, nothing passed
            np.testing.assert_allclose([t["score"] for t in e["top"]], [t["score"] for t in f["top"]],
                                       atol=1e-6)
            if mode == "stream":
                assert (e["start_time"], e["end_time"]) == (f["start_time"], f["end_time"])

    # ... and the full environment's PyTorch model gives the same answers
    ref = VideoClassifier.from_model(model, threads=1)
    for src, rec in zip(videos, _infer(edge["bin"] / "e3d-infer", *videos, "--artifact", box,
                                      "--mode", "video", "--backend", "onnxruntime", env=env)["records"]):
        want = ref.classify(src, return_probs=True)
        assert [t["index"] for t in rec["top"]] == [t["index"] for t in want["top"]]
        np.testing.assert_allclose([t["score"] for t in rec["top"]],
                                   [t["score"] for t in want["top"]], atol=1e-4)


@pytest.mark.slow
def test_edge_pipeline_never_imports_torch(edge, export_folder, videos):
    folder, _ = export_folder
    code = f"""
import sys
from e3d_runtime import VideoClassifier
clf = VideoClassifier.from_artifact({str(folder)!r})
rec = clf.classify({str(videos[0])!r})
windows = list(clf.stream({str(videos[1])!r}, hop=0.5))
assert rec["top"][0]["label"].startswith("action_") and len(windows) >= 2, (rec, windows)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision", "e3d_zoo"))
assert not loaded, loaded
print("ok", clf.backend.name, len(windows))
"""
    p = subprocess.run([str(edge["python"]), "-c", code], capture_output=True, text=True, timeout=300,
                       env=_edge_env(), cwd=edge["root"])
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert p.stdout.startswith("ok openvino")


@pytest.mark.slow
def test_edge_verify_reruns_the_folder_without_torch(edge, export_folder):
    """`e3d-export --verify` on the box: every artifact against the reference stored at
    export time, on the edge venv's own runtimes; a tampered copy fails in one line."""
    folder, _ = export_folder
    box = edge["root"] / "verify" / folder.name
    shutil.copytree(folder, box)
    env = _edge_env()
    p = subprocess.run([str(edge["bin"] / "e3d-export"), "--verify", str(box), "--threads", "1"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert "files passed" in p.stdout and "passed   model.onnx" in p.stdout
    assert "passed   model.xml" in p.stdout
    # the source check needs torch: reported as skipped, with the reason
    assert "source   skipped: torch and e3d-zoo not installed here" in p.stdout

    # the same command in-process, to see what it imported
    code = f"""
import io, json, sys
from contextlib import redirect_stdout
from e3d_runtime.cli.export import main
out = io.StringIO()
with redirect_stdout(out):
    rc = main(["--verify", {str(box)!r}, "--threads", "1", "--json"])
report = json.loads(out.getvalue())
assert rc == 0 and report["ok"], report
assert {{r["status"] for r in report["checks"]["artifacts"]}} == {{"passed"}}, report
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision", "e3d_zoo",
                                                             "e3d_export"))
assert not loaded, loaded
print("ok", len(report["checks"]["artifacts"]))
"""
    p = subprocess.run([str(edge["python"]), "-c", code], capture_output=True, text=True, timeout=300,
                       env=env, cwd=edge["root"])
    assert p.returncode == 0 and p.stdout.startswith("ok 2"), p.stdout + p.stderr[-3000:]

    # tampered: the OpenVINO weights changed after export
    bin_file = box / "model.bin"
    data = bytearray(bin_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bin_file.write_bytes(bytes(data))
    p = subprocess.run([str(edge["bin"] / "e3d-export"), "--verify", str(box), "--threads", "1"],
                       capture_output=True, text=True, timeout=300, env=env)
    err = p.stderr.strip()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stdout + p.stderr[-3000:]
    assert err.startswith("e3d-export: error:") and "\n" not in err
    assert "model.bin: sha256 differs" in err


@pytest.mark.slow
def test_edge_commands_that_need_torch_say_so(edge, videos):
    env = _edge_env()
    exe = edge["bin"]
    p = subprocess.run([str(exe / "e3d-export"), "e3d_s", "--out", str(edge["root"] / "x")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2 and "pip install e3d-zoo" in p.stderr and "Traceback" not in p.stderr
    assert "--check" in subprocess.run([str(exe / "e3d-export"), "--help"], capture_output=True,
                                       text=True, timeout=120, env=env).stdout
    p = subprocess.run([str(exe / "e3d-infer"), str(videos[0]), "--model", "e3d_s"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2 and "pip install e3d-zoo" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([str(exe / "e3d-infer"), "--help"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 0 and "--artifact" in p.stdout
