"""eval/gpu_check.sh on a machine without CUDA: it runs, exits cleanly and says what it
could not do and why, in one JSON document (also written to the file it names).

The GPU run itself cannot happen here (docs/export.md: unrun on a GPU); what is tested
is the part every machine runs: the wrapper's install-free PYTHONPATH layout, the JSON
shape and the honest "not run because" fields.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_on_a_cpu_machine_says_what_it_did_not_run_and_why(tmp_path):
    out = tmp_path / "res" / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHON"] = sys.executable
    r = subprocess.run(["bash", str(REPO / "eval" / "gpu_check.sh"), str(out), "--runs", "3"],
                       capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)  # exactly one JSON document on stdout
    assert json.loads(out.read_text()) == doc
    assert doc["schema"] == "e3d-gpu-check" and doc["finished"] and doc["elapsed_s"] < 480
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
