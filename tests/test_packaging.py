"""Packaging: the wheel ships the searched archs and installs no generic top-level names."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _declared_packages():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_declared():
    cfg = _declared_packages()
    declared = set(cfg["packages"])
    dirs = {"e3d_zoo": ROOT / "e3d_zoo", "e3d_export": ROOT / "export", "e3d_eval": ROOT / "eval",
            "e3d_zoo_cli": ROOT / "e3d_zoo_cli"}
    found = set()
    for name, base in dirs.items():
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((name, *rel.parts)) if rel.parts else name)
    found.add("e3d_zoo.searched_archs")
    assert found <= declared, f"add to pyproject [tool.setuptools].packages: {sorted(found - declared)}"


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    import shutil

    # from a copy: a stale build/lib of a developer's tree (e.g. modules since moved to
    # e3d_runtime) must not end up in the wheel
    src = tmp_path / "src"
    generated = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")

    def ignore(folder, names):
        top = {".git", ".venv", "runtime", "tests", "docs", "runs"} if folder == str(ROOT) else set()
        return set(generated(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, src, ignore=ignore)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next(tmp_path.glob("e3d_zoo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for arch in ("e3d_s", "e3d_m", "e3d_l"):
        assert f"e3d_zoo/searched_archs/{arch}.json" in names
    tops = {n.split("/")[0] for n in names if not n.startswith("e3d_zoo-")}
    assert tops == {"e3d_zoo", "e3d_export", "e3d_eval", "e3d_zoo_cli"}
    # the runtime side ships in e3d-runtime only: one copy of each module
    assert not [n for n in names if n.startswith(("e3d_zoo/errors", "e3d_zoo/video/pipeline",
                                                   "e3d_zoo/runtime/openvino"))]


def test_runtime_distribution_is_torch_free_and_owns_the_edge_commands():
    full = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    edge = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text())["project"]
    assert edge["name"] == "e3d-runtime" and "e3d-runtime" in full["dependencies"]
    # numpy, and filelock (pure Python) for the one-writer-per-output locks: nothing heavy
    assert [d.split(">")[0].split("=")[0] for d in edge["dependencies"]] == ["numpy", "filelock"]
    assert {"openvino", "onnxruntime", "video", "trt"} <= set(edge["optional-dependencies"])
    # a console script defined by both distributions would be overwritten by whichever installs last
    assert not set(full["scripts"]) & set(edge["scripts"])
    assert {"e3d-infer", "e3d-export"} <= set(edge["scripts"])


@pytest.mark.slow
def test_runtime_wheel_contents(tmp_path):
    import shutil

    # from a copy: a stale build/ of a developer's tree must not decide what the wheel holds
    src = shutil.copytree(ROOT / "runtime", tmp_path / "src",
                          ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("e3d_runtime-*.whl"))).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("e3d_runtime-")} == {"e3d_runtime"}
    assert "e3d_runtime/video/transforms.py" in names and "e3d_runtime/cli/export.py" in names
