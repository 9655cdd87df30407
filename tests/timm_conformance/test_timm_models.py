"""timm's own model tests pass for e3d_s, e3d_m and e3d_l.

The tests are timm's ``tests/test_models.py`` from the source distribution of the
installed timm (downloaded with pip once, cached per version), adapted only as
``adapt_timm_tests.py`` says (clip inputs, spatial axes, the module filter), and run in
a fresh pytest process. A failed download fails this test: it never skips.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import timm

from e3d_zoo.zoo import ZOO_MODELS

from adapt_timm_tests import adapt

# The tests of timm's test_models.py that are parametrized over the registry and apply to
# E3D: forward (+ grad checkpointing), backward, cfgs, torchscript, features_only,
# forward_intermediates, fx, fx backward, fx + torchscript; all must run and pass. Any
# other test that selects E3D must pass too (timm 1.0.31 adds its pruning contract). Not
# here: the non-standard-model cfg test (E3D is standard) and the pretrained-weight tests
# (they select models with published weights; none are published).
REQUIRED_TESTS = {
    "test_model_forward", "test_model_backward", "test_model_default_cfgs",
    "test_model_forward_torchscript", "test_model_forward_features",
    "test_model_forward_intermediates_features", "test_model_forward_intermediates",
    "test_model_forward_fx", "test_model_backward_fx", "test_model_forward_fx_torchscript",
}


def _cache_dir() -> Path:
    root = os.environ.get("E3D_ZOO_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "e3d-zoo")
    return Path(root) / "timm-sdist"


def _timm_sdist(version: str) -> Path:
    """timm-VERSION.tar.gz from the package index (pip checks its hash), cached."""
    final = _cache_dir() / f"timm-{version}.tar.gz"
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"timm=={version}", "-d", tmp, "--disable-pip-version-check", "-q"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        got = sorted(Path(tmp).glob("timm-*.tar.gz"))
        if res.returncode != 0 or not got:
            pytest.fail(f"could not download timm {version}'s sdist (its tests/ are what this test "
                        f"runs): {' '.join(cmd)} exited {res.returncode}:\n{res.stderr[-3000:]}")
        os.replace(got[0], final)  # atomic: a concurrent run finds a whole file or none
    return final


@pytest.fixture(scope="module")
def timm_suite(tmp_path_factory) -> Path:
    """A folder with the adapted test_models.py and a pytest.ini with timm's markers."""
    version = timm.__version__
    sdist = _timm_sdist(version)
    root = f"timm-{version}"
    try:
        with tarfile.open(sdist) as tar:
            tests = tar.extractfile(f"{root}/tests/test_models.py").read().decode("utf-8")
            project = tomllib.loads(tar.extractfile(f"{root}/pyproject.toml").read().decode("utf-8"))
    except (tarfile.TarError, KeyError, OSError, AttributeError) as exc:
        sdist.unlink(missing_ok=True)  # a damaged cache file is fetched again next time
        pytest.fail(f"{sdist}: not a readable timm sdist with tests/test_models.py: {exc}")
    text, _ = adapt(tests)
    folder = tmp_path_factory.mktemp("timm_suite")
    (folder / "test_models_e3d.py").write_text(text, encoding="utf-8")
    markers = project["tool"]["pytest"]["ini_options"]["markers"]
    # timm's CI runs pytest-timeout; without the plugin its timeout mark is only a label
    lines = ["[pytest]", "markers ="] + [f"    {m}" for m in markers] + ["    timeout: pytest-timeout's mark"]
    (folder / "pytest.ini").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _results(junit: Path) -> dict[str, str]:
    """{test id: 'passed' | 'failed' | 'error' | 'skipped'} from a JUnit XML report."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "failed"}.get(child.tag, child.tag)
        out[case.get("name")] = status
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model", ZOO_MODELS)
def test_timm_test_models_pass(timm_suite, model, tmp_path):
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "pytest", "test_models_e3d.py", "-k", model, "-c", "pytest.ini",
           "--rootdir", ".", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-rfEs",
           f"--junitxml={junit}"]
    res = subprocess.run(cmd, cwd=timm_suite, capture_output=True, text=True, env=env, timeout=1800)
    results = _results(junit) if junit.is_file() else {}
    ran = {name.split("[")[0] for name in results}
    not_passed = {name: status for name, status in results.items() if status != "passed"}
    report = f"timm's tests for {model} (exit {res.returncode}):\n{res.stdout[-6000:]}\n{res.stderr[-2000:]}"
    assert res.returncode == 0 and not not_passed, report
    assert REQUIRED_TESTS <= ran, (f"expected timm's {sorted(REQUIRED_TESTS - ran)} to run too, "
                                   f"ran {sorted(ran)}\n{report}")
    assert all(f"-{model}]" in name or f"[{model}]" in name for name in results)
