"""Reliability report: fuzzed architecture files and the CLI bad-input table.

    python -m e3d_eval.fuzz_report --files 5000 --out fuzz_report.json
    python -m e3d_eval.fuzz_report --skip-cli --files 20000     # arch files only

Part 1 writes ``--files`` hostile architecture files (JSON and TinyNAS text, mutated
from the shipped architectures with a seeded RNG: huge and non-finite numbers, wrong
types, deep nesting, lone surrogates, truncation, byte noise, ...) and loads each one
in a worker process, then computes its costs. It counts files that raise anything
but ``ArchError``, files slower than ``--slow-s``, and hangs (no answer within
``--hang-s``; the worker is killed and restarted). Part 2 runs every row of
:mod:`e3d_eval.bad_inputs` as a real process and counts tracebacks, exit code 0,
hangs and messages that do not name the input.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from e3d_runtime.machine import cpu_info

from e3d_eval.bad_inputs import CASES, ENTRY_POINTS, SMALL_ARCH, available, make_fixtures

TRACEBACK = "Traceback (most recent call last)"
# Address-space cap for every child: a file that makes the loader read /dev/zero or build
# a huge list fails there with MemoryError instead of taking a shared machine's memory.
MEMORY_LIMIT = 4 << 30


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


# ---- part 1: hostile architecture files ----------------------------------------------------

_HUGE_DIGITS = "9" * 5000
MAX_FUZZ_FILE_BYTES = 4 << 20  # longer files are cut: "too large" is one case, not the point


def _hostile(rng: random.Random) -> Any:
    """A value no field should accept; strings starting with @@ are replaced in the text."""
    return rng.choice([
        -1, 0, 1, 2, 4, 7, 2 ** 31, 2 ** 63, 10 ** 18, 10 ** 100, "@@HUGE", 1e18, 1.5, -0.0,
        1e308, math.nan, math.inf, -math.inf, "", "3", "\ud800", "x" * rng.choice([10, 100_000]),
        [], [1, 2], {}, {"a": 1}, True, False, None, "@@DEEP10", "@@DEEP1000", "@@DEEP100000",
        [0] * 1000,
    ])


def _expand(text: str) -> str:
    """Placeholders -> text json.dumps cannot write; the first of each kind only, so a
    duplicated block does not multiply a 200 kB nesting."""
    for q in ('"', "'"):
        text = text.replace(f"{q}@@HUGE{q}", _HUGE_DIGITS, 1)
        for d in (10, 1000, 100_000):
            text = text.replace(f"{q}@@DEEP{d}{q}", "[" * d + "]" * d, 1)
    return text


def _mutate_doc(doc: Any, rng: random.Random) -> Any:
    op = rng.randrange(9)
    if not isinstance(doc, dict) or not doc or op == 0:
        return _hostile(rng)
    blocks = doc.get("blocks") if isinstance(doc.get("blocks"), list) else None
    if op == 1:
        doc[rng.choice(sorted(doc))] = _hostile(rng)
    elif op == 2 and blocks:
        b = rng.choice(blocks)
        if isinstance(b, dict) and b:
            b[rng.choice(sorted(b))] = _hostile(rng)
    elif op == 3 and blocks:
        b = rng.choice(blocks)
        if isinstance(b, dict) and b:
            del b[rng.choice(sorted(b))]
    elif op == 4:
        target = rng.choice(blocks) if blocks and rng.random() < 0.5 else doc
        if isinstance(target, dict):
            target[rng.choice(["extra", "L", "btn", "nbitsA", "schema", "\ud800"])] = _hostile(rng)
    elif op == 5 and blocks:  # copies, not references: a later mutation changes one block
        size = len(json.dumps(blocks))
        times = min(rng.choice([2, 50, 10_000]), max(2, MAX_FUZZ_FILE_BYTES // size))
        doc["blocks"] = json.loads(json.dumps(blocks * times))
    elif op == 6 and blocks:
        rng.shuffle(blocks)
    elif op == 7 and blocks:
        blocks[rng.randrange(len(blocks))] = _hostile(rng)
    elif op == 8:
        doc.pop(rng.choice(sorted(doc)), None)
    return doc


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    op = rng.randrange(5)
    if op == 0 and data:
        return data[:rng.randrange(len(data))]
    if op == 1 and data:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if op == 2:
        i = rng.randrange(len(data) + 1)
        return data[:i] + rng.choice([b"\xff\xfe", b"\x00", b"\xed\xa0\x80", b"\\ud800"]) + data[i:]
    if op == 3:
        return b"\xef\xbb\xbf" + data
    return data


def _tinynas_text(doc: Any, rng: random.Random) -> str:
    blocks = doc.get("blocks") if isinstance(doc, dict) else doc
    structures: Any = [blocks]
    if rng.random() < 0.2:
        structures = _hostile(rng)
    elif rng.random() < 0.2:
        structures = blocks
    return repr({"best_structures": structures, "space_arch": "Cnn3DNet"})


def fuzzed_arch_files(n: int, seed: int = 0) -> Iterator[Tuple[str, bytes]]:
    """``n`` (file name, bytes) pairs, the same for the same seed."""
    from e3d_zoo.zoo import ZOO_MODELS, arch_path

    bases = [json.loads(arch_path(m).read_text()) for m in ZOO_MODELS] + [SMALL_ARCH]
    rng = random.Random(seed)
    for i in range(n):
        doc = json.loads(json.dumps(rng.choice(bases)))
        for _ in range(rng.randint(1, 3)):
            doc = _mutate_doc(doc, rng)
        tinynas = rng.random() < 0.3
        text = _tinynas_text(doc, rng) if tinynas else json.dumps(doc)
        data = _expand(text).encode("utf-8", "surrogatepass")[:MAX_FUZZ_FILE_BYTES]
        if rng.random() < 0.25:
            data = _mutate_bytes(data, rng)
        yield f"f{i:06d}.{'txt' if tinynas else 'json'}", data


def _worker(folder: str) -> None:
    """Load every file of ``folder`` named on stdin; one JSON line of results per file."""
    import tracemalloc

    from e3d_runtime.errors import ArchError
    from e3d_zoo.complexity import summary
    from e3d_zoo.spec import load_arch

    for line in sys.stdin:
        name = line.strip()
        path = Path(folder) / name
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            spec = load_arch(path, frames=8, size=64) if name.endswith(".txt") else load_arch(path)
            summary(spec)  # every cost, the score included
            outcome = "ok"
        except ArchError:
            outcome = "ArchError"
        except BaseException as exc:  # noqa: BLE001 - counting exactly these
            outcome = type(exc).__name__
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(json.dumps({"file": name, "outcome": outcome, "seconds": dt, "peak_mb": peak / 2 ** 20}),
              flush=True)


class _Worker:
    def __init__(self, folder: Path, env: Dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "e3d_eval.fuzz_report", "--worker", str(folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            preexec_fn=_limit_memory)

    def ask(self, name: str, timeout: float) -> Optional[dict]:
        import select

        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"file": name, "outcome": "worker died", "seconds": 0}

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def fuzz_arch_files(n: int, seed: int, hang_s: float, slow_s: float, env: Dict[str, str],
                    progress: bool = True) -> Dict[str, Any]:
    results: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="e3d-fuzz-") as tmp:
        folder = Path(tmp)
        names = []
        for name, data in fuzzed_arch_files(n, seed):
            (folder / name).write_bytes(data)
            names.append(name)
        names += ["/dev/zero"]
        worker = _Worker(folder, env)
        # the first answer includes the worker's start-up (imports); not a hang
        for i, name in enumerate(names):
            res = worker.ask(name, hang_s + (60 if i == 0 else 0))
            if res is None:
                worker.kill()
                res = {"file": name, "outcome": "hang", "seconds": hang_s}
                worker = _Worker(folder, env)
            results.append(res)
            if progress and (i + 1) % 500 == 0:
                print(f"  {i + 1}/{len(names)} files", file=sys.stderr, flush=True)
        worker.kill()
    outcomes: Dict[str, int] = {}
    for r in results:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    bad = [r for r in results if r["outcome"] not in ("ok", "ArchError")]
    return {
        "files": len(results), "seed": seed, "outcomes": outcomes,
        "not_arch_error": sum(1 for r in bad if r["outcome"] != "hang"),
        "hangs": outcomes.get("hang", 0),
        f"slower_than_{slow_s}s": sum(1 for r in results if r["seconds"] > slow_s),
        "max_seconds": max(r["seconds"] for r in results),
        "max_peak_mb": max(r.get("peak_mb", 0.0) for r in results),
        "examples": bad[:20],
        "slowest": sorted(results, key=lambda r: -r["seconds"])[:10],
    }


# ---- part 2: the CLI table ---------------------------------------------------------------------

def run_case(prog: str, argv: Sequence[str], env: Dict[str, str], timeout: float) -> Dict[str, Any]:
    module, func = ENTRY_POINTS[prog].split(":")
    code = f"import sys; from {module} import {func} as m; sys.exit(m(sys.argv[1:]))"
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                           timeout=timeout, env=env, stdin=subprocess.DEVNULL,
                           preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        return {"rc": None, "stderr": "", "seconds": timeout, "hang": True}
    return {"rc": p.returncode, "stderr": p.stderr, "stdout": p.stdout,
            "seconds": time.perf_counter() - t0, "hang": False}


def classify(res: Dict[str, Any], expect: Sequence[str]) -> List[str]:
    problems = []
    if res["hang"]:
        return ["hang"]
    if TRACEBACK in res["stderr"]:
        problems.append("traceback")
    if res["rc"] == 0:
        problems.append("exit 0")
    if not all(e in res["stderr"] for e in expect):
        problems.append("input not named")
    return problems


def cli_table(roots: Sequence[Path], env: Dict[str, str], timeout: float,
              progress: bool = True) -> Dict[str, Any]:
    """Every runnable row as a real process, ``len(roots)`` at a time. Each running case
    holds a fixture folder of its own: rows write outputs such as ``{root}/run``, and two
    of them on one folder would meet each other's lock instead of the bad input."""
    import queue

    runnable, skipped = [], []
    for c in CASES:
        if available(c, roots[0])[0]:
            runnable.append(c)
        else:
            skipped.append(c.id)
    free: "queue.Queue[Path]" = queue.Queue()
    for r in roots:
        free.put(r)

    def one(case):
        root = free.get()
        try:
            argv, expect = case.format(root)
            res = run_case(case.prog, argv, dict(env, HOME=str(root / "home")), timeout)
        finally:
            free.put(root)
        return case, argv, expect, res

    rows = []
    with ThreadPoolExecutor(max_workers=len(roots)) as pool:
        for i, (case, argv, expect, res) in enumerate(pool.map(one, runnable)):
            problems = classify(res, expect)
            last = [ln for ln in res["stderr"].strip().splitlines() if ln.strip()][-1:] or [""]
            rows.append({"prog": case.prog, "argv": argv, "expect": expect, "rc": res["rc"],
                         "problems": problems, "seconds": round(res["seconds"], 2),
                         "last_line": last[0][:300]})
            if progress and (i + 1) % 20 == 0:
                print(f"  {i + 1}/{len(runnable)} CLI cases", file=sys.stderr, flush=True)
    count = lambda p: sum(1 for r in rows if p in r["problems"])  # noqa: E731
    return {"cases": len(rows), "skipped": skipped, "tracebacks": count("traceback"),
            "exit_0": count("exit 0"), "hangs": count("hang"),
            "input_not_named": count("input not named"),
            "clean": sum(1 for r in rows if not r["problems"]),
            "failures": [r for r in rows if r["problems"]], "rows": rows}


# ---- report ------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m e3d_eval.fuzz_report", description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=5000, help="fuzzed architecture files (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hang-s", type=float, default=10.0, help="seconds after which a file is a hang")
    p.add_argument("--slow-s", type=float, default=1.0, help="seconds over which a file is counted slow")
    p.add_argument("--case-timeout", type=float, default=180.0, help="seconds before a CLI case is a hang")
    p.add_argument("--jobs", type=int, default=2, help="CLI cases run at once")
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument("--skip-files", action="store_true")
    p.add_argument("--out", help="write the report JSON here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    _limit_memory()
    if args.worker:
        _worker(args.worker)
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    report: Dict[str, Any] = {"cpu": {**cpu_info(), "python": platform.python_version()},
                              "commit": _git_commit(),
                              "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "command": " ".join(sys.argv)}

    def save() -> None:  # after each part: a long run that dies keeps what it measured
        if args.out:
            from e3d_runtime.atomic import atomic_write_text

            atomic_write_text(args.out, json.dumps(report, indent=1, default=str) + "\n")

    if not args.skip_files:
        print(f"fuzzing {args.files} architecture files ...", file=sys.stderr)
        report["arch_files"] = fuzz_arch_files(args.files, args.seed, args.hang_s, args.slow_s, env)
        save()
    if not args.skip_cli:
        with tempfile.TemporaryDirectory(prefix="e3d-bad-inputs-") as tmp:
            roots = [Path(tmp) / f"job{i}" for i in range(max(1, args.jobs))]
            print("making fixtures ...", file=sys.stderr)
            # built once (a search, torch models, ONNX exports, a video), copied to the other
            # job folders: no fixture file names its folder, so a copy is as good as a build
            make_fixtures(roots[0])
            for root in roots[1:]:
                shutil.copytree(roots[0], root, symlinks=True)
            print(f"running {len(CASES)} CLI cases ...", file=sys.stderr)
            report["cli"] = cli_table(roots, env, args.case_timeout)
        save()
    summary = {k: v for k, v in report.get("arch_files", {}).items() if k != "examples"}
    cli = {k: v for k, v in report.get("cli", {}).items() if k not in ("rows", "failures")}
    print(json.dumps({"arch_files": summary, "cli": cli}, indent=1))
    for r in report.get("cli", {}).get("failures", []):
        print(f"  {','.join(r['problems']):<28} {r['prog']} {' '.join(r['argv'])[:100]}\n"
              f"  {'':<28} -> {r['last_line'][:160]}")
    return 0


def _git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
