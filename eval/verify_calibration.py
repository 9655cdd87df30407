"""How far each precision's artifacts are from PyTorch untouched, and with each fault.

    python -m e3d_eval.verify_calibration --json docs/export_verify_calibration.json [--seeds 0 1 2]

Exports the tiny test E3D (tests/tiny_arch.py's blocks; random weights with trained-like
BatchNorm statistics) to every format that runs on a CPU, injects each fault of
:mod:`e3d_export.faults` into each artifact, and reports max relative error and cosine
against PyTorch fp32 on 4 seeded clips: the numbers behind :data:`e3d_export.criteria.CRITERIA`
(docs/export.md, "Verification").
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional


FORMATS = {"onnx": "model.onnx", "onnx_2d": "model_2d.onnx", "openvino": "model.xml",
           "openvino_fp16": "model_fp16.xml", "onnx_fp16": "model_fp16.onnx", "int8_onnx": "model_int8.onnx",
           "int8_onnx_trt": "model_int8_trt.onnx", "int8_openvino": "model_int8.xml"}


def _tiny_spec():
    """The test suite's tiny E3D (tests/tiny_arch.py in a repo checkout)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "tiny_arch.py"
    if not path.is_file():
        raise SystemExit(f"verify_calibration: needs the repo checkout's {path}")
    spec = importlib.util.spec_from_file_location("tiny_arch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tiny_spec()


def calibrate(seed: int, work: Path) -> Dict[str, Dict[str, Any]]:
    import torch

    import e3d_zoo
    from e3d_export import export, randomize_statistics
    from e3d_export.criteria import compare, criteria_for
    from e3d_export.faults import FAULTS, inject
    from e3d_export.reverify import run_artifact, artifact_plan, load_reference
    from e3d_export.manifest import load_manifest

    torch.manual_seed(seed)
    model = randomize_statistics(e3d_zoo.create_model(_tiny_spec(), num_classes=7), seed)
    folder = work / f"seed{seed}"
    export(model, folder, openvino=True, lower_2d=True, fp16=True, int8=True, n_clips=4, n_calibration=16,
           threads=1)
    manifest = load_manifest(folder)
    clips, logits = load_reference(folder, manifest)
    rows: Dict[str, Dict[str, Any]] = {}
    for name, file in FORMATS.items():
        plan = artifact_plan(name, manifest["artifacts"][name], manifest)
        crit = criteria_for(plan["criteria"].precision)
        row = {}
        for fault in ("untouched",) + FAULTS:
            path = folder / file if fault == "untouched" else inject(folder / file, work / "faulty", fault)
            a = compare(logits, run_artifact(path, plan["backend"], plan["options"], clips, 1), crit)
            row[fault] = {"max_rel_err": a.max_rel_err, "cosine": a.min_cosine, "passed": a.passed}
        rows[name] = {"criteria": crit.to_dict(), **row}
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="verify_calibration", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="e3d_verify_cal_"))
    try:
        results = {str(s): calibrate(s, work) for s in args.seeds}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from e3d_runtime.machine import cpu_info

    cpu = cpu_info().get("model") or platform.processor()
    doc = {"cpu": cpu, "model": "tiny E3D (tests/tiny_arch.py blocks), 4 clips 3x4x32x32", "results": results}
    for seed, rows in results.items():
        print(f"seed {seed}: max rel err / cosine (* = passes its precision's criteria)")
        for name, row in rows.items():
            cells = [f"{k} {v['max_rel_err']:.2g}/{v['cosine']:.5f}{'*' if v['passed'] else ''}"
                     for k, v in row.items() if k != "criteria"]
            print(f"  {name:14s} " + " | ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
