"""Fault injection: the verifier must fail on a corrupted artifact of every format, naming
the artifact and the failed criterion, and pass the untouched one.

One export of the tiny E3D to every format that runs here; each fault (tests/export/
faults.py) edits one artifact in a copy of the folder, and ``e3d-export --verify``'s
code path re-runs it against the stored reference. Weights x 1.01 is not asserted for
INT8: INT8's own error (0.2-0.3 of the logit range on this net) is larger than what
the fault changes (docs/export.md, "What INT8 verification cannot catch").
"""
from __future__ import annotations

import shutil

import pytest

from e3d_export.faults import FAULTS, inject
from tiny_arch import tiny_model
from e3d_export import export
from e3d_export.reverify import failure_line, verify_folder

FORMATS = {  # manifest name -> file
    "onnx": "model.onnx", "onnx_2d": "model_2d.onnx", "openvino": "model.xml",
    "openvino_fp16": "model_fp16.xml", "onnx_fp16": "model_fp16.onnx",
    "int8_onnx": "model_int8.onnx", "int8_onnx_trt": "model_int8_trt.onnx", "int8_openvino": "model_int8.xml",
}
CASES = [(name, fault) for name in FORMATS for fault in FAULTS
         if not (name.startswith("int8") and fault == "scale_weight")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "tiny"
    export(tiny_model(), out, openvino=True, lower_2d=True, fp16=True, int8=True, n_clips=4,
           n_calibration=16, threads=1)
    return out


def test_every_untouched_artifact_passes(folder):
    report = verify_folder(folder, threads=1)
    assert report["ok"], failure_line(report)
    assert {r["name"]: r["status"] for r in report["checks"]["artifacts"]} == {n: "passed" for n in FORMATS}


@pytest.mark.parametrize("name,fault", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_fault_is_caught_naming_artifact_and_criterion(folder, tmp_path, name, fault):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    target = copy / FORMATS[name]
    faulty = inject(target, tmp_path / "faulty", fault)
    shutil.copyfile(faulty, target)
    if target.suffix == ".xml":
        shutil.copyfile(faulty.with_suffix(".bin"), target.with_suffix(".bin"))
    report = verify_folder(copy, threads=1, only=[name])
    row = report["checks"]["artifacts"][0]
    assert row["status"] == "failed", (fault, row)
    assert row["failed"] and all(any(c in f for c in ("max_rel_err", "cosine", "top-1", "top-"))
                                 for f in row["failed"])
    line = failure_line(report)
    assert FORMATS[name] in line and row["failed"][0] in line and "\n" not in line
