"""The zoo's console scripts parse their arguments before torch is imported.

``import e3d_zoo`` registers the zoo in timm (torch + timm: seconds); the scripts go
through ``e3d_zoo_cli``, which defers that until a command touches a model. Checked in
a fresh interpreter per command, the way the console script starts.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r"""
import io, json, sys, contextlib
import e3d_zoo_cli
sys.argv = [{prog!r}] + {argv!r}
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        rc = getattr(e3d_zoo_cli, {entry!r})()
    except SystemExit as exc:
        rc = exc.code
heavy = sorted(m for m in ("torch", "timm", "torchvision", "onnx", "openvino", "av") if m in sys.modules)
print(json.dumps({{"rc": rc, "heavy": heavy, "out": out.getvalue()}}))
"""


def _probe(entry: str, prog: str, argv):
    code = PROBE.format(prog=prog, argv=list(argv), entry=entry)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("entry,prog,required", [("zoo", "e3d-zoo", ["info", "e3d_s"]),
                                                 ("search", "e3d-search", ["--out", "x.json"]),
                                                 ("bench", "e3d-bench", []), ("train", "e3d-train", [])])
def test_help_and_usage_errors_import_no_torch(entry, prog, required):
    got = _probe(entry, prog, ["--help"])
    assert got["rc"] == 0 and f"usage: {prog}" in got["out"]
    assert got["heavy"] == [], got["heavy"]
    got = _probe(entry, prog, required + ["--no-such-flag"])
    assert got["rc"] == 2 and "--no-such-flag" in got["out"] and "Traceback" not in got["out"]
    assert got["heavy"] == [], got["heavy"]


def test_a_command_that_needs_the_zoo_still_gets_it_registered_in_timm():
    code = ("import sys, e3d_zoo_cli; sys.argv = ['e3d-zoo', 'info', 'e3d_s', '--json']; rc = e3d_zoo_cli.zoo(); "
            "import timm; assert rc == 0, rc; assert timm.list_models('e3d_s') == ['e3d_s']; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    assert json.loads(r.stdout[: r.stdout.rindex("ok")])["name"] == "e3d_s"


def test_plain_import_still_registers_the_zoo_in_timm():
    code = "import e3d_zoo, timm; print(timm.list_models('e3d*')); print(e3d_zoo.create_model.__module__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["['e3d_l', 'e3d_m', 'e3d_s']", "e3d_zoo.zoo"]


def test_a_deferred_command_checks_a_saved_config_against_the_registered_zoo(tmp_path):
    """`e3d-zoo push FOLDER ...` reads the folder's config.json, whose architecture must be a
    model timm knows; with the package's names deferred the registry was still empty, and the
    command blamed the folder ("'e3d_s' is not a registered model") instead of the bad repo id
    (found by running the bad-input table as real processes)."""
    from e3d_zoo.hub import save_pretrained
    from tests.tiny_arch import tiny_model

    folder = save_pretrained(tiny_model(), tmp_path / "pretrained")
    code = ("import sys, e3d_zoo_cli\n"
            f"sys.exit(e3d_zoo_cli.zoo(['push', {str(folder)!r}, 'hf-hub:../..']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "../.." in r.stderr and "not a registered model" not in r.stderr, r.stderr
