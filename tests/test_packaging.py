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
    dirs = {"e3d_zoo": ROOT / "e3d_zoo", "e3d_export": ROOT / "export", "e3d_eval": ROOT / "eval"}
    found = set()
    for name, base in dirs.items():
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((name, *rel.parts)) if rel.parts else name)
    found.add("e3d_zoo.searched_archs")
    assert found <= declared, f"add to pyproject [tool.setuptools].packages: {sorted(found - declared)}"


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next(tmp_path.glob("e3d_zoo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for arch in ("e3d_s", "e3d_m", "e3d_l"):
        assert f"e3d_zoo/searched_archs/{arch}.json" in names
    tops = {n.split("/")[0] for n in names if not n.startswith("e3d_zoo-")}
    assert tops == {"e3d_zoo", "e3d_export", "e3d_eval"}
