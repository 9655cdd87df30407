"""eval/gpu_check.sh on a machine without CUDA: it runs, exits cleanly and says what it
could not do and why, in one JSON document (also written to the file it names).

The GPU run itself cannot happen here (it ran once on a lent H200: docs/gpu_check_h200.json); what is tested
is the part every machine runs: the wrapper's install-free PYTHONPATH layout, the JSON
shape and the honest "not run because" fields.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("where", ["elsewhere", "repo_root"])
def test_gpu_check_on_a_cpu_machine_says_what_it_did_not_run_and_why(tmp_path, where):
    # From the repo root (how it runs on a lent GPU machine) `python -m` would put the source
    # folder e3d_zoo/ (which lacks searched_archs) ahead of the wrapper's layout: the first
    # H200 run failed that way. Elsewhere, OUT is given relative to the caller's folder.
    out = tmp_path / "res" / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHON"] = sys.executable
    cwd, out_arg = (REPO, str(out)) if where == "repo_root" else (tmp_path, "res/gpu_check.json")
    r = subprocess.run(["bash", str(REPO / "eval" / "gpu_check.sh"), out_arg, "--runs", "3"],
                       capture_output=True, text=True, timeout=300, cwd=str(cwd), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)  # exactly one JSON document on stdout
    assert json.loads(out.read_text()) == doc
    assert doc["schema"] == "e3d-gpu-check" and doc["finished"] and doc["elapsed_s"] > 0  # no speed limit: run()'s timeout guards a hang
    env_doc = doc["environment"]
    assert env_doc["python"] and env_doc["cpu"]["count"] and "flags" in env_doc["cpu"]
    # the repo's packages come from the wrapper's symlink folder, not from an installation
    for name, origin in env_doc["packages"].items():
        assert origin and "e3d_gpu_check." in origin, (name, origin)
    assert doc["torch_cuda"] == {"status": "not run",
                                 "reason": "no CUDA GPU is visible (torch.cuda.is_available() is False)"}
    assert doc["tensorrt"]["status"] == "not run" and "tensorrt" in doc["tensorrt"]["reason"]
    assert {d["what"] for d in doc["not_done"]} == {"CUDA PyTorch path", "TensorRT engines"}
    assert all(d["why"] for d in doc["not_done"])


def test_gpu_check_wrapper_names_a_missing_python(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHON"] = str(tmp_path / "no-such-python3")
    r = subprocess.run(["bash", str(REPO / "eval" / "gpu_check.sh"), str(tmp_path / "x.json")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "no-such-python3 not found" in r.stderr
    assert not (tmp_path / "x.json").exists()
