"""Hostile inputs for every CLI: a table of (command line, what the error must name).

``tests/test_cli_bad_inputs.py`` runs every row in-process and asserts a non-zero exit,
no traceback and a message naming the input; ``python -m e3d_eval.fuzz_report`` runs
them as real processes (with a time limit) and counts the failures. To add a case,
append a :class:`Case`; ``{root}`` in its argv and fragment is the fixture folder that
:func:`make_fixtures` fills.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

# console script -> "module:function": [project.scripts] of pyproject.toml (e3d-zoo) and
# runtime/pyproject.toml (e3d-runtime, whose e3d-export hands exporting to e3d_export.cli)
ENTRY_POINTS = {
    "e3d-zoo": "e3d_zoo_cli:zoo",
    "e3d-search": "e3d_zoo_cli:search",
    "e3d-export": "e3d_runtime.cli.export:main",
    "e3d-bench": "e3d_zoo_cli:bench",
    "e3d-infer": "e3d_runtime.cli.infer:main",
    "e3d-train": "e3d_zoo_cli:train",
}

# A 2-block network small enough to build, export and run in well under a second.
SMALL_ARCH = {
    "name": "e3d_small", "frames": 4, "size": 16, "head_hidden": 16,
    "blocks": [{"class": "Conv3DKXBNRELU", "in": 3, "out": 8, "s": 2, "kt": 1, "k": 3},
               {"class": "SuperRes3DK1DWK1", "in": 8, "out": 16, "s": 2, "kt": 3, "k": 3,
                "L": 2, "btn": 8}],
}
# Not writable even by root (sysfs refuses new entries), so the case means the same in CI.
READ_ONLY_DIR = "/sys"


@dataclass(frozen=True)
class Case:
    prog: str
    argv: Tuple[str, ...]
    expect: Tuple[str, ...]       # fragments the error must all contain: the input, what is wrong
    needs: Tuple[str, ...] = ()   # fixtures/features: "video", "onnx", "readonly"

    def format(self, root: Path) -> Tuple[List[str], List[str]]:
        return [a.format(root=root) for a in self.argv], [e.format(root=root) for e in self.expect]

    @property
    def id(self) -> str:
        return f"{self.prog} {' '.join(self.argv)}".replace("{root}/", "")[:110]


def _c(prog: str, line: str, *expect: str, needs: Tuple[str, ...] = ()) -> Case:
    return Case(prog, tuple(line.split()), expect, needs)


V, O, R = ("video",), ("video", "onnx"), ("readonly",)
RANGE = "expected an integer"
FINITE = "expected a finite number"
NOT_UTF8 = "not UTF-8 text"
NOT_FILE = "not a regular file"
FOLDER = "is a folder"
READ_ONLY = "permission denied"
SEARCH = "--budget-flops 2e9 --no-plots --no-progress"
SEARCH_OUT = f"{SEARCH} --candidates 50 --out {{root}}/s.json"
# a latency budget, so the finalists' flags apply (the table itself is never read: the
# flags are refused first)
LATENCY = f"{SEARCH_OUT} --budget-latency-ratio 1 --latency-table {{root}}/missing_table.json"
# the settings the fixture checkpoint was made with (make_fixtures: _checkpoints)
RESUME = f"{SEARCH} --population 8 --candidates 200 --out {{root}}/r.json --resume --checkpoint"
BENCH = "{root}/small.json --backends torch"
EXPORT = "{root}/small.json --no-verify --out {root}/exp"
INFER_OPTS = "--model {root}/small.json --random-weights --no-progress --crops 1"
INFER = "{root}/clip.mp4 " + INFER_OPTS
TRAIN = ("--model {root}/small.json --set data=synthetic --set train_clips=8 --set val_clips=4 "
         "--epochs 1 --batch-size 4 --no-progress --set plot=false")
BAD_CKPT = {  # fixture suffix -> the field the error must name
    "nan_score": "population[0][0]", "neg_counters": "counters.accepted", "bad_rng": "rng_state",
    "short_block": "population[0][1][1]", "bad_cand": "population[0]", "wrong_score": "population[7][0]",
    "no_population": "population", "huge_candidates": "past the requested total",
    "str_history": "history", "over_population": "population", "unsorted": "ascending",
}
BAD_SETTINGS = {  # e3d-train --set KEY=VALUE -> what the error says
    "lr=inf": FINITE, "lr=nan": FINITE, "lr=-1": "lr must be > 0", "min_lr=nan": FINITE,
    "weight_decay=inf": FINITE, "momentum=nan": FINITE, "momentum=-1": "[0, 1]",
    "clip_grad=nan": FINITE, "clip_grad=-1": "> 0", "drop_rate=1.5": "[0, 1)",
    "drop_rate=nan": FINITE, "drop_path_rate=-0.1": "[0, 1)", "warmup_epochs=nan": FINITE,
    "warmup_epochs=inf": FINITE, "val_fraction=2": "(0, 1)", "val_fraction=nan": FINITE,
    "scale_min=0": ">= 1", "scale_max=-1": ">= 1", "head_hidden=-1": "[0, 65536]",
    "label_smoothing=nan": FINITE, "epochs=1e400": "type int", "frames=100000": "[1, 4096]",
    "size=1000000": "[1, 8192]", "batch_size=0": ">= 1", "nope=1": "unknown setting",
    "optimizer=adam": "'adamw' or 'sgd'", "amp=fp8": "one of", "max_steps_per_epoch=0": ">= 1",
    "eval_spatial_views=0": ">= 1", "channels_last=maybe": "type bool",
}
MANIFESTS = {"list": "schema", "files_list": "files", "entry_str": "files", "binary": NOT_UTF8,
             "no_sha": "files", "bad_path": "../../etc/passwd: missing"}

CASES: List[Case] = [
    # ---- e3d-zoo: clip flags, hostile arch files, outputs -------------------------------
    _c("e3d-zoo", "info e3d_s --frames -1", "--frames", RANGE),
    _c("e3d-zoo", "info e3d_s --frames 0", "--frames", RANGE),
    _c("e3d-zoo", "info e3d_s --frames 100000", "--frames", "[1, 4096]"),
    _c("e3d-zoo", "info e3d_s --size 0", "--size", RANGE),
    _c("e3d-zoo", "info e3d_s --size 7", "size", "[32, 8192]", "found 7"),
    _c("e3d-zoo", "info e3d_s --size 1000000", "--size", "[1, 8192]"),
    _c("e3d-zoo", "info e3d_s --num-classes 0", "--num-classes", ">= 1"),
    _c("e3d-zoo", "info nope_net", "nope_net", "unknown model"),
    _c("e3d-zoo", "info {root}/missing.json", "missing.json", "no such"),
    _c("e3d-zoo", "info {root}/adir", "adir", FOLDER),
    _c("e3d-zoo", "info /dev/zero", "/dev/zero", NOT_FILE),
    _c("e3d-zoo", "info {root}/deep.json", "deep.json", "nested too deeply"),
    _c("e3d-zoo", "info {root}/huge_int.json", "huge_int.json", "digits"),
    _c("e3d-zoo", "info {root}/big_channels.json", "big_channels.json", "blocks[0].out", "[1, 16384]"),
    _c("e3d-zoo", "info {root}/L_huge.json", "L_huge.json", "blocks[1].L", "[1, 256]"),
    _c("e3d-zoo", "info {root}/surrogate.json", "surrogate.json", "name", "surrogate"),
    _c("e3d-zoo", "info {root}/binary.json", "binary.json", NOT_UTF8),
    _c("e3d-zoo", "info {root}/nan_frames.json", "nan_frames.json", "frames", "found nan"),
    _c("e3d-zoo", "info {root}/top_list.json", "top_list.json", "expected a JSON object"),
    _c("e3d-zoo", "info {root}/many_blocks.json", "many_blocks.json", "at most"),
    _c("e3d-zoo", "info {root}/tinynas_nonlist.txt --frames 8 --size 64", "tinynas_nonlist.txt",
       "best_structures: expected a non-empty list"),
    _c("e3d-zoo", "info {root}/tinynas_inner_int.txt --frames 8 --size 64", "tinynas_inner_int.txt",
       "best_structures[0]: expected a list of blocks"),
    _c("e3d-zoo", "info {root}/tinynas_deep.txt --frames 8 --size 64", "tinynas_deep.txt",
       "not a Python literal"),
    _c("e3d-zoo", "info hf-hub:../..", "hf-hub:../.."),
    _c("e3d-zoo", "score e3d_s --stage-weights nan,0,0,0,1", "--stage-weights", "finite"),
    _c("e3d-zoo", "score e3d_s --stage-weights inf,0,0,0,1", "--stage-weights", "finite"),
    _c("e3d-zoo", "score e3d_s --stage-weights 1,1", "--stage-weights", "5 weights"),
    _c("e3d-zoo", "score e3d_s --frames 0", "--frames", RANGE),
    _c("e3d-zoo", "convert e3d_s {root}/adir.json", "adir.json", FOLDER),
    _c("e3d-zoo", "convert e3d_s {root}/out.yaml", "out.yaml", ".json"),
    _c("e3d-zoo", f"convert e3d_s {READ_ONLY_DIR}/e3d.json", f"{READ_ONLY_DIR}/e3d.json", READ_ONLY,
       needs=R),
    _c("e3d-zoo", "convert e3d_s {root}/afile.txt/x.json", "afile.txt is a file"),
    _c("e3d-zoo", "push {root}/pretrained hf-hub:../..", "../..", "not a valid Hub repo id"),
    _c("e3d-zoo", "push {root}/pretrained org/name --endpoint http://127.0.0.1:9", "127.0.0.1:9",
       "cannot reach"),
    _c("e3d-zoo", "push {root}/adir org/name", "adir", "no config.json"),
    _c("e3d-zoo", "push {root}/missing org/name", "missing", "no such folder"),
    # ---- e3d-search: numbers, outputs, checkpoints ------------------------------------
    _c("e3d-search", f"{SEARCH_OUT} --frames 0", "--frames", RANGE),
    _c("e3d-search", f"{SEARCH_OUT} --size -5", "--size", RANGE),
    _c("e3d-search", f"{SEARCH_OUT} --size 7", "size", "[32, 8192]", "found 7"),
    _c("e3d-search", "--budget-flops nan --out {root}/s.json", "--budget-flops", FINITE),
    _c("e3d-search", "--budget-flops -1 --out {root}/s.json", "--budget-flops", "> 0"),
    _c("e3d-search", "--budget-flops inf --out {root}/s.json", "--budget-flops", FINITE),
    _c("e3d-search", "--budget-params 0 --out {root}/s.json", "--budget-params", "> 0"),
    _c("e3d-search", "--budget-layers 0 --out {root}/s.json", "--budget-layers", ">= 1"),
    _c("e3d-search", f"{SEARCH_OUT} --candidates -1", "--candidates", ">= 0"),
    _c("e3d-search", f"{SEARCH_OUT} --population 0", "--population", ">= 1"),
    _c("e3d-search", f"{SEARCH_OUT} --checkpoint-every 0", "--checkpoint-every", ">= 1"),
    _c("e3d-search", f"{SEARCH_OUT} --seed -1", "--seed", ">= 0"),
    _c("e3d-search", f"{SEARCH_OUT} --num-classes 0", "--num-classes", ">= 1"),
    _c("e3d-search", f"{SEARCH_OUT} --mutations 0", "--mutations", ">= 1"),
    _c("e3d-search", f"{SEARCH_OUT} --max-channels 1000000", "--max-channels", "16384"),
    _c("e3d-search", f"{SEARCH_OUT} --stage-weights nan,0,0,0,1", "--stage-weights", "finite"),
    _c("e3d-search", f"{SEARCH_OUT} --channel-scales nan", "--channel-scales", "positive numbers"),
    _c("e3d-search", f"{SEARCH} --out {{root}}/adir.json", "adir.json", FOLDER),
    _c("e3d-search", f"{SEARCH} --out {{root}}/s.txt", "s.txt", ".json"),
    _c("e3d-search", f"{SEARCH} --out {READ_ONLY_DIR}/s.json", f"{READ_ONLY_DIR}/s.json", READ_ONLY,
       needs=R),
    _c("e3d-search", f"{SEARCH} --out {{root}}/afile.txt/s.json", "afile.txt is a file"),
    _c("e3d-search", f"{RESUME} {{root}}/missing_ckpt.json", "missing_ckpt.json", "no checkpoint"),
    _c("e3d-search", f"{RESUME} {{root}}/binary.json", "binary.json", NOT_UTF8),
    _c("e3d-search", f"{RESUME} /dev/zero", "/dev/zero", NOT_FILE),
    _c("e3d-search", f"{RESUME} {{root}}/adir", "adir", FOLDER),
    _c("e3d-search", f"{RESUME} {{root}}/top_list.json", "top_list.json", "not an e3d-search checkpoint"),
    *[_c("e3d-search", f"{RESUME} {{root}}/ckpt_{kind}.json", f"ckpt_{kind}.json", field)
      for kind, field in BAD_CKPT.items()],
    _c("e3d-search", f"{SEARCH_OUT} --space {{root}}/binary.json", "binary.json", NOT_UTF8),
    _c("e3d-search", f"{SEARCH_OUT} --space /dev/zero", "/dev/zero", NOT_FILE),
    _c("e3d-search", f"{SEARCH_OUT} --space {{root}}/space_nan.json", "space_nan.json", "channel_scales"),
    _c("e3d-search", f"{SEARCH_OUT} --seed-arch {{root}}/deep.json", "deep.json", "nested too deeply"),
    _c("e3d-search", f"{SEARCH_OUT} --budget-latency-ms 5 --latency-table {{root}}/binary.json",
       "binary.json", NOT_UTF8),
    _c("e3d-search", f"{SEARCH_OUT} --budget-latency-ms 5 --latency-table /dev/zero", "/dev/zero",
       NOT_FILE),
    _c("e3d-search", f"{SEARCH_OUT} --budget-latency-ms nan --latency-table {{root}}/binary.json",
       "--budget-latency-ms", FINITE),
    _c("e3d-search", f"{SEARCH_OUT} --budget-latency-ms 0 --latency-table {{root}}/binary.json",
       "--budget-latency-ms", "> 0"),
    _c("e3d-search", f"{SEARCH_OUT} --budget-latency-ratio 0 --latency-table {{root}}/binary.json",
       "--budget-latency-ratio", "> 0"),
    _c("e3d-search", f"{SEARCH_OUT} --budget-latency-ratio inf --latency-table {{root}}/binary.json",
       "--budget-latency-ratio", FINITE),
    _c("e3d-search", f"{SEARCH_OUT} --budget-latency-ratio 1", "--budget-latency-ratio",
       "needs --latency-table"),
    _c("e3d-search", f"{LATENCY} --finalists -1", "--finalists", ">= 0"),
    _c("e3d-search", f"{LATENCY} --finalist-step 1", "--finalist-step", "[0, 1)"),
    _c("e3d-search", f"{LATENCY} --finalist-step -0.1", "--finalist-step", "[0, 1)"),
    _c("e3d-search", f"{LATENCY} --finalist-step nan", "--finalist-step", FINITE),
    _c("e3d-search", f"{LATENCY} --measure-rounds 0", "--measure-rounds", ">= 1"),
    _c("e3d-search", f"{LATENCY} --measure-statistic mean", "--measure-statistic", "'mean'"),
    _c("e3d-search", f"{LATENCY} --score-size 0", "--score-size", RANGE),
    _c("e3d-search", f"{SEARCH_OUT} --score-size 100000", "--score-size", "[1, 8192]"),
    _c("e3d-search", f"{SEARCH_OUT} --score-size 7", "score_size", "found 7"),
    _c("e3d-search", f"{LATENCY.replace('missing_table', 'binary')} --latency-reference nope_net",
       "binary.json", NOT_UTF8),
    *[_c("e3d-search", f"{SEARCH_OUT} {flag}", flag.split()[0], "without a latency budget")
      for flag in ("--accept-nearest", "--finalists 3", "--finalist-step 0.1", "--measure-rounds 2",
                   "--measure-statistic cpu", "--latency-reference e3d_m",
                   "--latency-table {root}/binary.json")],
    # ---- e3d-export: outputs, numbers, manifests, weights -----------------------------
    _c("e3d-export", "{root}/small.json --no-verify --out {root}/afile.txt", "afile.txt",
       "refusing to replace"),
    _c("e3d-export", "{root}/small.json --no-verify --out {root}/not_ours", "not_ours",
       "refusing to replace"),
    _c("e3d-export", f"{{root}}/small.json --no-verify --out {READ_ONLY_DIR}/e3d_exp",
       f"{READ_ONLY_DIR}/e3d_exp", READ_ONLY, needs=R),
    _c("e3d-export", f"{EXPORT} --clips 0", "--clips", ">= 1"),
    _c("e3d-export", f"{EXPORT} --clips -3", "--clips", ">= 1"),
    _c("e3d-export", f"{EXPORT} --batch 0", "--batch", ">= 1"),
    _c("e3d-export", f"{EXPORT} --max-rel-err nan", "--max-rel-err", FINITE),
    _c("e3d-export", f"{EXPORT} --max-rel-err 0", "--max-rel-err", "> 0"),
    _c("e3d-export", f"{EXPORT} --max-rel-err -1", "--max-rel-err", "> 0"),
    _c("e3d-export", f"{EXPORT} --min-top1 nan", "--min-top1", "[0, 1]"),
    _c("e3d-export", f"{EXPORT} --min-top1 1.5", "--min-top1", "[0, 1]"),
    _c("e3d-export", f"{EXPORT} --opset 16", "--opset", ">= 17"),
    _c("e3d-export", f"{EXPORT} --seed -1", "--seed", ">= 0"),
    _c("e3d-export", f"{EXPORT} --precision fp8", "--precision", "'fp8'"),
    _c("e3d-export", f"{EXPORT} --held-out synthetic", "--held-out", "--precision auto"),
    _c("e3d-export", f"{EXPORT} --precision auto --held-out synthetic", "precision auto",
       "weights are random"),
    _c("e3d-export", "{root}/pretrained --no-verify --out {root}/exp --precision auto",
       "precision auto", "needs held-out clips"),
    _c("e3d-export", "{root}/pretrained --no-verify --out {root}/exp --precision auto "
       "--held-out synthetic:0", "synthetic:0", "N in [1, 10000]"),
    _c("e3d-export", "{root}/pretrained --no-verify --out {root}/exp --precision auto "
       "--held-out synthetic:99999999", "synthetic:99999999", "N in [1, 10000]"),
    _c("e3d-export", "{root}/pretrained --no-verify --out {root}/exp --precision auto "
       "--held-out synthetic:x", "synthetic:x", "integers"),
    _c("e3d-export", "{root}/pretrained --no-verify --out {root}/exp --precision auto "
       "--held-out {root}/missing.npy", "missing.npy", "existing .npy/.npz"),
    _c("e3d-export", "{root}/pretrained --no-verify --out {root}/exp --precision auto "
       "--held-out {root}/wrong_shape.npy", "held-out clips", "(N, 3, 4, 16, 16)"),
    _c("e3d-export", "{root}/pretrained --no-verify --out {root}/exp --precision auto "
       "--held-out {root}/nan_clips.npy", "held-out clips", "finite"),
    _c("e3d-export", "{root}/pretrained --no-verify --out {root}/exp --precision auto "
       "--held-out {root}/pickled.npy", "pickled.npy", "cannot read held-out clips"),
    _c("e3d-export", f"{EXPORT} --frames 0", "--frames", RANGE),
    _c("e3d-export", f"{EXPORT} --size 3", "size", "[4, 8192]", "found 3"),
    _c("e3d-export", f"{EXPORT} --num-classes 0", "--num-classes", ">= 1"),
    _c("e3d-export", f"{EXPORT} --benchmark -1", "--benchmark", ">= 0"),
    _c("e3d-export", f"{EXPORT} --threads 0", "--threads", ">= 1"),
    _c("e3d-export", f"{EXPORT} --int8 --calibration-clips 0", "--calibration-clips", ">= 1"),
    *[_c("e3d-export", f"{task} {{root}}/{folder}", folder, what)
      for task, manifests in (("--check", MANIFESTS),  # --verify reads the reference first
                              ("--verify", {**MANIFESTS, "bad_path": "no reference data"}))
      for folder, what in (("adir", "no manifest.json"), ("missing", "no such folder"),
                           ("afile.txt", "not a folder"),
                           *((f"manifest_{kind}", what) for kind, what in manifests.items()))],
    _c("e3d-export", "--verify {root}/adir --threads 0", "--threads", ">= 1"),
    _c("e3d-export", "--check {root}/adir --verify {root}/adir", "--verify", "not allowed with"),
    _c("e3d-export", "--check", "--check", "expected one argument"),
    _c("e3d-export", "hf-hub:../.. --no-verify --out {root}/exp", "../..", "not a valid Hub repo id"),
    _c("e3d-export", "{root}/deep.json --no-verify --out {root}/exp", "deep.json", "nested too deeply"),
    _c("e3d-export", "/dev/zero --no-verify --out {root}/exp", "/dev/zero", NOT_FILE),
    _c("e3d-export", "{root}/nan.safetensors --arch {root}/small.json --no-verify --out {root}/exp",
       "nan.safetensors", "non-finite"),
    _c("e3d-export", "{root}/nan_pretrained --no-verify --out {root}/exp", "nan_pretrained",
       "non-finite"),
    _c("e3d-export", f"{EXPORT} --video {{root}}/missing.mp4", "missing.mp4", "no such", needs=V),
    _c("e3d-export", f"{EXPORT} --video {{root}}/adir", "adir", "cannot open as a video", needs=V),
    _c("e3d-export", f"{EXPORT} --video {{root}}/binary.json", "binary.json",
       "cannot open as a video", needs=V),
    # ---- e3d-bench -----------------------------------------------------------------------
    _c("e3d-bench", f"{BENCH} --runs 0", "--runs", ">= 1"),
    _c("e3d-bench", f"{BENCH} --rounds 0", "--rounds", ">= 1"),
    _c("e3d-bench", f"{BENCH} --warmup -1", "--warmup", ">= 0"),
    _c("e3d-bench", f"{BENCH} --batch 0", "--batch", ">= 1"),
    _c("e3d-bench", f"{BENCH} --batch nan", "--batch", "'nan'"),
    _c("e3d-bench", f"{BENCH} --frames 0", "--frames", RANGE),
    _c("e3d-bench", f"{BENCH} --num-classes 0", "--num-classes", ">= 1"),
    _c("e3d-bench", f"{BENCH} --threads 0", "--threads", ">= 1"),
    _c("e3d-bench", "{root}/small.json --backends nope", "nope", "unknown backend"),
    _c("e3d-bench", f"{BENCH} --peaks most", "--peaks", "'most'"),
    _c("e3d-bench", f"{BENCH} --size 3", "size", "[4, 8192]", "found 3"),
    _c("e3d-bench", "e3d_s --backends torch --size 7", "size", "[32, 8192]", "found 7"),
    _c("e3d-bench", "--profile-table {root}/t.json --frames 4 --size 16 --zoo --statistic mean",
       "--statistic", "'mean'"),
    _c("e3d-bench", "/dev/zero --backends torch", "/dev/zero", NOT_FILE),
    _c("e3d-bench", "--validate-predictor --table {root}/binary.json", "binary.json", NOT_UTF8),
    _c("e3d-bench", "--validate-predictor --table /dev/zero", "/dev/zero", NOT_FILE),
    _c("e3d-bench", "--validate-predictor --table {root}/missing.json", "missing.json", "no such"),
    _c("e3d-bench", "--validate-predictor --table {root}/adir", "adir", FOLDER),
    _c("e3d-bench", "--validate-predictor --table {root}/top_list.json --n 0", "--n", ">= 1"),
    _c("e3d-bench", "--profile-table {root}/binary.json --frames 4 --size 16 --zoo", "binary.json",
       NOT_UTF8),
    _c("e3d-bench", "--profile-table {root}/adir --frames 4 --size 16 --zoo", "adir", FOLDER),
    _c("e3d-bench", "--profile-table {root}/t.json --frames 0 --size 16 --zoo", "--frames", RANGE),
    _c("e3d-bench", "--profile-table {root}/t.json --frames 4 --size 16 --sample -1", "--sample", ">= 0"),
    _c("e3d-bench", "--profile-table {root}/t.json --frames 4 --size 16 --zoo --max-flops nan",
       "--max-flops", FINITE),
    _c("e3d-bench", "--profile-table {root}/t.json --frames 4 --size 16 --zoo --runs-per-round 0",
       "--runs-per-round", ">= 1"),
    _c("e3d-bench", "--profile-table {root}/t.json --frames 4 --size 16 --calibrate -1",
       "--calibrate", ">= 0"),
    _c("e3d-bench", "--profile-table {root}/t.json --frames 4 --size 16 --zoo", "e3d_s", "[32, 8192]"),
    # ---- e3d-train -------------------------------------------------------------------------
    _c("e3d-train", "{root}/binary.toml --print-config", "binary.toml", NOT_UTF8),
    _c("e3d-train", "{root}/bad.toml --print-config", "bad.toml", "not valid TOML"),
    _c("e3d-train", "/dev/zero --print-config", "/dev/zero", NOT_FILE),
    _c("e3d-train", "{root}/adir --print-config", "adir", FOLDER),
    _c("e3d-train", "{root}/missing.toml --print-config", "missing.toml", "no such"),
    _c("e3d-train", "{root}/list.json --print-config", "list.json", "table of settings"),
    _c("e3d-train", "{root}/deep_config.json --print-config", "deep_config.json", "not valid JSON"),
    *[_c("e3d-train", f"--set {kv} --print-config", kv.split("=")[0], what)
      for kv, what in BAD_SETTINGS.items()],
    _c("e3d-train", "--set lr --print-config", "--set", "KEY=VALUE"),
    _c("e3d-train", "--frames 0 --print-config", "frames", "[1, 4096]"),
    _c("e3d-train", "--size -1 --print-config", "size", "[1, 8192]"),
    _c("e3d-train", "--lr nan --print-config", "lr", FINITE),
    _c("e3d-train", f"{TRAIN} --output {{root}}/afile.txt", "afile.txt", "is a file"),
    _c("e3d-train", f"{TRAIN} --output {READ_ONLY_DIR}/e3d_run", f"{READ_ONLY_DIR}/e3d_run", READ_ONLY,
       needs=R),
    _c("e3d-train", f"{TRAIN} --output {{root}}/run --model {{root}}/deep.json", "deep.json",
       "nested too deeply"),
    _c("e3d-train", f"{TRAIN} --output {{root}}/run --model nope_net", "nope_net", "unknown model"),
    _c("e3d-train", f"{TRAIN} --output {{root}}/run --init {{root}}/nan.safetensors",
       "nan.safetensors", "non-finite"),
    _c("e3d-train", f"{TRAIN} --output {{root}}/corrupt_run --resume", "last.pt",
       "not a loadable checkpoint"),
    _c("e3d-train", f"{TRAIN} --output {{root}}/run --set data=folder --set data_root={{root}}/missing",
       "missing", "no such folder"),
    _c("e3d-train", f"{TRAIN} --output {{root}}/run --set data=csv --set data_root={{root}}/adir "
       "--set train_list={root}/binary.json --set val_list={root}/binary.json", "binary.json", NOT_UTF8),
    _c("e3d-train", f"{TRAIN} --output {{root}}/run --set data=csv --set data_root={{root}}/adir "
       "--set train_list=/dev/zero --set val_list=/dev/zero", "/dev/zero", NOT_FILE),
    _c("e3d-train", f"{TRAIN} --output {{root}}/run --set data=ssv2 --set data_root={{root}}/adir "
       "--set train_list={root}/ssv2_list.json --set val_list={root}/ssv2_list.json "
       "--set label_map={root}/bad_map.json", "bad_map.json", "integer indices"),
    # ---- e3d-infer -------------------------------------------------------------------------
    _c("e3d-infer", f"{INFER} --decoder-resize", "--decoder-resize", "clip.mp4", "--mode stream", needs=V),
    _c("e3d-infer", f"{INFER} --hop 0 --mode stream", "--hop", "> 0", needs=V),
    _c("e3d-infer", f"{INFER} --hop nan --mode stream", "--hop", FINITE, needs=V),
    _c("e3d-infer", f"{INFER} --smoothing nan", "--smoothing", FINITE, needs=V),
    _c("e3d-infer", f"{INFER} --smoothing 1", "--smoothing", "[0, 1)", needs=V),
    _c("e3d-infer", f"{INFER} --top-k 0", "--top-k", ">= 1", needs=V),
    _c("e3d-infer", f"{INFER} --batch-size 0", "--batch-size", ">= 1", needs=V),
    _c("e3d-infer", f"{INFER} --frame-stride 0", "--frame-stride", ">= 1", needs=V),
    _c("e3d-infer", f"{INFER} --sample-fps 0", "--sample-fps", "> 0", needs=V),
    _c("e3d-infer", f"{INFER} --sample-fps nan", "--sample-fps", FINITE, needs=V),
    _c("e3d-infer", f"{INFER} --clips 0", "--clips", ">= 1", needs=V),
    _c("e3d-infer", f"{INFER} --start -1 --mode stream", "--start", ">= 0", needs=V),
    _c("e3d-infer", f"{INFER} --timeout 0", "--timeout", "> 0", needs=V),
    _c("e3d-infer", f"{INFER} --max-reconnects -1", "--max-reconnects", ">= 0", needs=V),
    _c("e3d-infer", f"{INFER} --threads 0", "--threads", ">= 1", needs=V),
    _c("e3d-infer", f"{INFER} --streams 0", "--streams", ">= 1", needs=V),
    _c("e3d-infer", f"{INFER} --streams 2", "--streams", "openvino", needs=V),
    _c("e3d-infer", f"{INFER} --num-classes 0", "--num-classes", ">= 1", needs=V),
    _c("e3d-infer", f"{INFER} --decode-threads -1", "--decode-threads", ">= 0", needs=V),
    _c("e3d-infer", f"{INFER} --precision fp16", "--precision", "'fp16'", needs=V),
    _c("e3d-infer", f"{INFER} --precision int8", "--precision int8", "--artifact FOLDER", needs=V),
    _c("e3d-infer", f"{INFER} --backend nope", "nope", "unknown backend", needs=V),
    _c("e3d-infer", "{root}/clip.mp4 --artifact {root}/adir --no-progress", "adir",
       "no manifest.json", needs=V),
    _c("e3d-infer", "{root}/clip.mp4 --artifact {root}/manifest_list --no-progress",
       "manifest_list", "schema", needs=V),
    _c("e3d-infer", f"{INFER} --jsonl {{root}}/adir.jsonl", "adir.jsonl", FOLDER, needs=V),
    _c("e3d-infer", f"{INFER} --jsonl {{root}}/out.txt", "out.txt", ".jsonl", needs=V),
    _c("e3d-infer", f"{INFER} --jsonl {READ_ONLY_DIR}/out.jsonl", f"{READ_ONLY_DIR}/out.jsonl",
       READ_ONLY, needs=("video", "readonly")),
    _c("e3d-infer", f"{INFER} --jsonl {{root}}/binary.jsonl", "binary.jsonl", "not UTF-8", needs=V),
    _c("e3d-infer", f"{INFER} --csv {{root}}/adir.csv", "adir.csv", FOLDER, needs=V),
    _c("e3d-infer", f"{INFER} --labels {{root}}/missing.txt", "missing.txt", "no such", needs=V),
    _c("e3d-infer", f"{INFER} --labels {{root}}/binary.json", "binary.json", NOT_UTF8, needs=V),
    _c("e3d-infer", f"{INFER} --labels /dev/zero", "/dev/zero", NOT_FILE, needs=V),
    _c("e3d-infer", f"{INFER} --labels {{root}}/two_labels.txt", "labels", "2 label names", needs=V),
    _c("e3d-infer", f"{{root}}/clip.mp4 rtsp://127.0.0.1:9/live {INFER_OPTS} --mode video",
       "--mode video", "rtsp://", needs=V),
    _c("e3d-infer", f"{{root}}/clip.mp4 {{root}}/clip.mp4 {INFER_OPTS} --annotate {{root}}/a.mp4",
       "--annotate", "one input", needs=V),
    _c("e3d-infer", "{root}/missing.mp4 --model {root}/small.json --random-weights --no-progress",
       "missing.mp4", "no such"),
    _c("e3d-infer", "{root}/clip.mp4 --model {root}/nan_pretrained --no-progress", "nan_pretrained",
       "non-finite", needs=V),
    _c("e3d-infer", "{root}/clip.mp4 --model {root}/small.json --weights {root}/nan.safetensors "
       "--no-progress", "nan.safetensors", "non-finite", needs=V),
    _c("e3d-infer", "{root}/clip.mp4 --artifact {root}/nan.onnx --no-progress", "clip.mp4",
       "non-finite", needs=O),
    _c("e3d-infer", "{root}/clip.mp4 --model e3d_s --random-weights --artifact {root}/small.onnx "
       "--no-progress", "small.onnx", "not an export of --model e3d_s", needs=O),
    _c("e3d-infer", "{root}/clip.mp4 --model {root}/pretrained --artifact {root}/other.onnx "
       "--no-progress", "other.onnx", "not an export of --model", needs=O),
    _c("e3d-infer", "{root}/clip.mp4 --model {root}/pretrained --artifact {root}/small.onnx "
       "--backend torch --no-progress", "--backend torch", "drop one", needs=O),
    _c("e3d-infer", "{root}/clip.mp4 --model hf-hub:../.. --no-progress", "../..",
       "not a valid Hub repo id", needs=V),
    _c("e3d-infer", "{root}/clip.mp4 --artifact {root}/missing.onnx --no-progress", "missing.onnx",
       "no such", needs=V),
    _c("e3d-infer", "{root}/clip.mp4 --artifact {root}/binary.onnx --no-progress", "binary.onnx",
       "cannot load", needs=O),
]


# ---- fixtures ---------------------------------------------------------------------------

def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    path.write_bytes(data)


def _arch(**changes) -> dict:
    d = json.loads(json.dumps(SMALL_ARCH))
    d.update(changes)
    return d


def _checkpoints(root: Path) -> None:
    """A real checkpoint of a tiny search, then one corruption of it per file."""
    from e3d_zoo.search import search

    ckpt = root / "ckpt_good.json"
    search(13, 160, budgets={"tinynas_flops": 2e9}, candidates=200, population=8, plots=False,
           checkpoint=ckpt, checkpoint_every=100)  # the settings of bad_inputs.RESUME
    good = json.loads(ckpt.read_text())

    def variant(kind: str, mutate) -> None:
        doc = json.loads(json.dumps(good))
        mutate(doc)
        _write(root / f"ckpt_{kind}.json", json.dumps(doc))

    def set_(key, value):
        return lambda d: d.__setitem__(key, value)

    variant("nan_score", lambda d: d["population"][0].__setitem__(0, math.nan))
    variant("neg_counters", lambda d: d["counters"].__setitem__("accepted", -5))
    variant("bad_rng", set_("rng_state", [3, [1, 2], None]))
    variant("short_block", lambda d: d["population"][0][1].__setitem__(1, [1, 2]))
    variant("bad_cand", lambda d: d["population"][0][1][1].__setitem__(2, 10 ** 6))
    variant("wrong_score", lambda d: d["population"][-1].__setitem__(0, 10 ** 6))
    variant("no_population", set_("population", []))
    variant("huge_candidates", set_("candidates", 10 ** 30))
    variant("str_history", set_("history", "abc"))
    variant("over_population", lambda d: d.__setitem__("population", d["population"] * 40))
    variant("unsorted", lambda d: d.__setitem__("population", d["population"][::-1]))


def _weights(root: Path) -> None:
    """Weights with NaNs (a file, a save-pretrained folder), a good folder, ONNX files."""
    import torch

    from e3d_zoo import hub
    from e3d_zoo.spec import ArchSpec
    from e3d_zoo.zoo import create_model

    torch.manual_seed(0)
    model = create_model(ArchSpec.from_dict(SMALL_ARCH), num_classes=5).eval()
    hub.save_pretrained(model, root / "pretrained")
    bad = create_model(ArchSpec.from_dict(SMALL_ARCH), num_classes=5).eval()
    with torch.no_grad():
        bad.classifier.weight[0, 0] = math.nan
    state = {k: v.contiguous() for k, v in bad.state_dict().items()}
    from safetensors.torch import save_file

    save_file(state, str(root / "nan.safetensors"))
    nan_folder = root / "nan_pretrained"
    nan_folder.mkdir()
    (nan_folder / "config.json").write_text((root / "pretrained" / "config.json").read_text())
    save_file(state, str(nan_folder / "model.safetensors"))
    try:
        from e3d_export import export_onnx
    except ImportError:  # pragma: no cover - the onnx extra is missing
        return
    export_onnx(model, root / "small.onnx", frames=4, size=16)
    other = create_model(ArchSpec.from_dict(_arch(head_hidden=32)), num_classes=5).eval()
    export_onnx(other, root / "other.onnx", frames=4, size=16)
    export_onnx(bad, root / "nan.onnx", frames=4, size=16)


def _held_out_files(root: Path) -> None:
    """--held-out files for SMALL_ARCH (3 x 4 x 16^2 clips): a wrong shape, NaNs, a pickle."""
    import numpy as np

    np.save(root / "wrong_shape.npy", np.zeros((2, 3, 4, 8, 8), np.float32))
    np.save(root / "nan_clips.npy", np.full((2, 3, 4, 16, 16), np.nan, np.float32))
    np.save(root / "pickled.npy", np.array([{"not": "clips"}], dtype=object), allow_pickle=True)


def make_fixtures(root: str | os.PathLike, *, models: bool = True) -> Path:
    """Fill ``root`` with every file the cases name. ``models=False`` skips the ones that
    need torch work (weights, ONNX, search checkpoints, video)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "small.json", json.dumps(SMALL_ARCH))
    (root / "adir").mkdir(exist_ok=True)
    (root / "adir.json").mkdir(exist_ok=True)
    (root / "adir.jsonl").mkdir(exist_ok=True)
    (root / "adir.csv").mkdir(exist_ok=True)
    _write(root / "afile.txt", "a regular file the user cares about\n")
    _write(root / "not_ours" / "thesis.tex", "\\documentclass{article}\n")
    _write(root / "binary.json", bytes(range(256)) * 4)
    _write(root / "binary.toml", b"\xff\xfe\x00\x01" * 64)
    _write(root / "binary.onnx", b"\x08\x07" + bytes(range(256)))
    _write(root / "bad.toml", "lr = = 3\n")
    _write(root / "binary.jsonl", b"\xff\xfe" * 64)
    _write(root / "two_labels.txt", "left\nright\n")
    _write(root / "ssv2_list.json", json.dumps([{"id": "1", "template": "Pushing [something]"}]))
    _write(root / "bad_map.json", json.dumps({"Pushing something": "first"}))
    _write(root / "list.json", "[1, 2, 3]")
    _write(root / "top_list.json", "[1, 2, 3]")
    _write(root / "deep.json", "[" * 100_000 + "]" * 100_000)
    _write(root / "deep_config.json", '{"a":' * 50_000 + "1" + "}" * 50_000)
    _write(root / "huge_int.json", json.dumps(_arch()).replace('"frames": 4', '"frames": ' + "9" * 5000))
    _write(root / "big_channels.json", json.dumps(_arch(blocks=[
        {"class": "Conv3DKXBNRELU", "in": 3, "out": 10 ** 12, "s": 2, "kt": 1, "k": 3}])))
    blocks = json.loads(json.dumps(SMALL_ARCH["blocks"]))
    blocks[1]["L"] = 10 ** 18
    _write(root / "L_huge.json", json.dumps(_arch(blocks=blocks)))
    _write(root / "surrogate.json", json.dumps(_arch()).replace('"e3d_small"', '"\\ud800"'))
    _write(root / "nan_frames.json", json.dumps(_arch(frames=math.nan)))
    conv = {"class": "Conv3DKXBNRELU", "in": 8, "out": 8, "s": 1, "kt": 1, "k": 1}
    _write(root / "many_blocks.json", json.dumps(_arch(blocks=SMALL_ARCH["blocks"][:1] + [conv] * 100_000)))
    _write(root / "tinynas_nonlist.txt", "{'best_structures': 5, 'space_arch': 'Cnn3DNet'}")
    _write(root / "tinynas_inner_int.txt", "{'best_structures': [5], 'space_arch': 'Cnn3DNet'}")
    _write(root / "tinynas_deep.txt", "{'best_structures': " + "[" * 5000 + "]" * 5000 + "}")
    _write(root / "space_nan.json", json.dumps({"channel_scales": [math.nan, 1.0]}))
    _held_out_files(root)
    for kind, doc in {"list": [], "files_list": {"schema": "e3d-export-manifest", "files": []},
                      "entry_str": {"schema": "e3d-export-manifest", "files": {"model.onnx": "x"}},
                      "no_sha": {"schema": "e3d-export-manifest", "files": {"model.onnx": {}}},
                      "bad_path": {"schema": "e3d-export-manifest",
                                   "files": {"../../etc/passwd": {"sha256": "0" * 64}}}}.items():
        _write(root / f"manifest_{kind}" / "manifest.json", json.dumps(doc))
    _write(root / "manifest_binary" / "manifest.json", b"\xff" * 64)
    if models:
        _checkpoints(root)
        _weights(root)
        run = root / "corrupt_run"
        run.mkdir(exist_ok=True)
        _write(run / "last.pt", b"PK\x03\x04 not really a zip")
        try:
            import numpy as np

            from e3d_runtime.video.writers import encode_video

            rng = np.random.default_rng(0)
            encode_video(root / "clip.mp4", (rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                                             for _ in range(12)), fps=12)
        except ImportError:  # pragma: no cover - the video extra is missing
            pass
    return root


def available(case: Case, root: Path) -> Tuple[bool, str]:
    """Whether this machine can run ``case`` (its fixtures and features exist)."""
    if "readonly" in case.needs and (not Path(READ_ONLY_DIR).is_dir() or _writable(READ_ONLY_DIR)):
        return False, f"{READ_ONLY_DIR} is missing or writable here"
    if "video" in case.needs and not (root / "clip.mp4").is_file():
        return False, "no video fixture (PyAV missing)"
    if "onnx" in case.needs and not (root / "small.onnx").is_file():
        return False, "no ONNX fixture (onnx extra missing)"
    return True, ""


def _writable(folder: str) -> bool:
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def case_table() -> Dict[str, Case]:
    out: Dict[str, Case] = {}
    for c in CASES:
        key = c.id
        n = 2
        while key in out:
            key, n = f"{c.id} #{n}", n + 1
        out[key] = c
    return out
