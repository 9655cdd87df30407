"""STEntr-maximizing evolution under budgets (the reference search's algorithm, fast).

Each candidate is a random member of the population with ``mutations_per_candidate``
mutations; valid (every candidate is, by construction), within budget and not already
in the population, it replaces the worst member when it scores higher (or fills the
population while it is smaller than ``population``).

Everything that decides the result (the population in order, the RNG state, the
counters) lives in a JSON checkpoint written atomically every ``checkpoint_every``
candidates, on completion and on Ctrl-C, so ``resume=True`` continues to exactly the
result of an uninterrupted run with the same settings.

Under a latency budget the final population's best members are then measured on
the device with a reference network (``finalists``); see ``finalists.py``.
"""
from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..atomic import atomic_write_text, output_lock
from ..errors import ArchError, E3DError, SearchError
from ..spec import BLOCK_CLASSES, MAX_CHANNELS, ArchSpec, load_arch
from .budgets import Budgets, LatencyMeasurer, LatencyPredictor
from .evaluate import FastEvaluator
from .finalists import (DEFAULT_FINALISTS, DEFAULT_MEASURE_ROUNDS, DEFAULT_STEP, Finalist,
                        LatencyBudgetMissed, LatencyVerdict, check_finalists, pick_finalists)
from .scores import get_score
from .space import (BoundSpace, Candidate, SearchSpace, blocks_as_dicts, default_space,
                    load_space, space_from_dict, spec_of)

CHECKPOINT_FORMAT = "e3d-search-checkpoint"
# 2: STEntr in the reference's floating-point arithmetic (scores of version 1 differ in
# the last bits), score_size.
CHECKPOINT_VERSION = 2
DEFAULT_CANDIDATES = 500_000
DEFAULT_POPULATION = 256
DEFAULT_CHECKPOINT_EVERY = 50_000
MAX_CHECKPOINT_BYTES = 64 << 20
# what happened to each candidate; the checkpoint stores one count each
COUNTERS = ("accepted", "over_budget", "duplicates", "score_undefined")
_EVENT_EVERY = 1024  # candidates between progress updates and Ctrl-C checks


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped early (Ctrl-C or ``stop_after``); ``checkpoint`` resumes it."""

    def __init__(self, candidates: int, checkpoint: Optional[Path]):
        self.candidates = candidates
        self.checkpoint = checkpoint
        where = f"; resume from {checkpoint}" if checkpoint else " (no checkpoint path was given)"
        super().__init__(f"search interrupted after {candidates} candidates{where}")


@dataclass
class Member:
    score: float
    candidate: Candidate
    tinynas_flops: float
    macs: int
    params: int
    layers: int


@dataclass
class SearchResult:
    spec: ArchSpec
    best_score: float
    tinynas_flops: float
    macs: int
    params: int
    layers: int
    candidates: int
    seconds: float
    candidates_this_run: int
    population: list[Member]
    history: list[tuple[int, float]]
    counters: dict[str, int]
    resumed_from: int = 0
    out: Optional[Path] = None
    checkpoint: Optional[Path] = None
    plots: list[Path] = field(default_factory=list)
    #: under a latency budget: the finalists, measured, and which one this result is
    latency: Optional[LatencyVerdict] = None

    @property
    def fits(self) -> Optional[bool]:
        """Whether the result's measured latency fits the latency budget (None: no latency
        budget, or not measured)."""
        return self.latency.fits if self.latency is not None else None

    @property
    def candidates_per_s(self) -> float:
        return self.candidates_this_run / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "tinynas_flops": self.tinynas_flops,
            "macs": self.macs,
            "params": self.params,
            "layers": self.layers,
            "candidates": self.candidates,
            "candidates_this_run": self.candidates_this_run,
            "resumed_from": self.resumed_from,
            "seconds": round(self.seconds, 3),
            "candidates_per_s": round(self.candidates_per_s, 1),
            "accepted": self.counters.get("accepted", 0),
            "over_budget": self.counters.get("over_budget", 0),
            "duplicates": self.counters.get("duplicates", 0),
            "score_undefined": self.counters.get("score_undefined", 0),
            "population": len(self.population),
            "out": str(self.out) if self.out else None,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "plots": [str(p) for p in self.plots],
            "seed": self.spec.provenance.get("seed"),
            "score_name": self.spec.provenance.get("score_name"),
            "score_frames": self.spec.provenance.get("score_frames"),
            "score_size": self.spec.provenance.get("score_size"),
            "budgets": self.spec.provenance.get("budgets"),
            "fits": self.fits,
            "latency": self.latency.to_dict() if self.latency is not None else None,
        }


def default_checkpoint_path(out: Union[str, os.PathLike]) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".search-ckpt.json")


def _resolve_space(space: Union[None, str, os.PathLike, Mapping, SearchSpace]) -> SearchSpace:
    if space is None:
        return default_space()
    if isinstance(space, SearchSpace):
        space.check()
        return space
    if isinstance(space, Mapping):
        return space_from_dict(space)
    return load_space(space)


def _resolve_seed_arch(seed_arch: Union[None, str, os.PathLike, ArchSpec], space: SearchSpace,
                       frames: int, size: int) -> ArchSpec:
    try:
        if seed_arch is None:
            return space.seed_spec(frames, size)
        if isinstance(seed_arch, ArchSpec):
            spec = seed_arch
        else:
            spec = load_arch(seed_arch, frames=frames, size=size)
        spec = spec.replace(frames=frames, size=size)
        return ArchSpec.from_dict(spec.to_dict(), f"seed architecture {spec.name or ''}".strip())
    except ArchError as exc:
        raise SearchError(f"seed architecture: {exc}") from None


def _resolve_reference(reference: Union[None, str, os.PathLike, ArchSpec], frames: int,
                       size: int) -> ArchSpec:
    from ..zoo import spec_for

    try:
        spec = spec_for("e3d_s" if reference is None else reference)
        return spec.replace(frames=frames, size=size, name=spec.name or "reference")
    except E3DError as exc:  # unknown, unreadable, or unable to take the search's clip
        raise SearchError(f"latency reference (--latency-reference): {exc}") from None


def _default_measurer(predictor: Any, rounds: int, statistic: Optional[str],
                      progress: bool) -> LatencyMeasurer:
    """This machine's runtime, as the predictor's latency table describes it."""
    try:
        from ..latency.compare import device_measurer
    except ImportError:  # pragma: no cover - a build without e3d_zoo.latency
        device_measurer = None
    measurer = (device_measurer(predictor, rounds=rounds, statistic=statistic, progress=progress)
                if device_measurer is not None else None)
    if measurer is None:
        raise SearchError(
            "latency budget: the finalists are measured on the device, and this latency "
            "predictor names no device (it has no latency table): pass latency_measurer=..., or "
            "finalists=0 to keep the predicted-only result (recorded as not measured)")
    return measurer


def _check_int(name: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise SearchError(f"{name}: expected an integer >= {minimum}, found {v!r}")
    return v


class _Search:
    """The validated setup of one search; ``run`` does the work."""

    def __init__(self, frames: int, size: int, budgets: Budgets, space: SearchSpace,
                 seed_spec: ArchSpec, score_name: str, stage_weights: Optional[tuple],
                 population: int, candidates: int, seed: int, num_classes: Optional[int],
                 latency_predictor: Optional[LatencyPredictor], score_size: Optional[int] = None,
                 latency_reference: Optional[ArchSpec] = None):
        self.frames, self.size = frames, size
        self.score_size = size if score_size is None else score_size
        self.budgets = budgets
        self.space = space
        self.seed_spec = seed_spec
        self.score = get_score(score_name)
        self.stage_weights = stage_weights
        self.population = population
        self.total = candidates
        self.seed = seed
        self.num_classes = num_classes
        self.predictor = latency_predictor

        n_stages = len(seed_spec.stage_ends())
        if stage_weights is not None and len(stage_weights) != n_stages:
            raise SearchError(f"stage weights: expected {n_stages} weights (one per stage of the "
                              f"seed architecture), found {len(stage_weights)}")
        if budgets.has_latency and latency_predictor is None:
            name = "latency_ms" if budgets.latency_ms is not None else "latency_ratio"
            raise SearchError(f"budget {name} ({Budgets.flag(name)}): needs a latency predictor "
                              "(--latency-table T.json)")
        #: the network latency budgets are measured against, and the predicted limit
        #: the evolution holds every candidate to
        self.reference = latency_reference
        self.reference_predicted_ms = math.nan
        self.latency_limit_ms: Optional[float] = None
        if budgets.has_latency:
            self.reference_predicted_ms = float(latency_predictor.predict_ms(latency_reference))
            limits = [budgets.latency_ms] if budgets.latency_ms is not None else []
            if budgets.latency_ratio is not None:
                limits.append(budgets.latency_ratio * self.reference_predicted_ms)
            self.latency_limit_ms = min(limits)
        self.bound = BoundSpace(space, seed_spec, size, budgets.layers)
        self.seed_cand = seed_spec.key()
        problems = self.bound.violations(self.seed_cand)
        if problems:
            raise SearchError("seed architecture breaks the search space's constraints: "
                              + "; ".join(problems))
        self.evaluator = FastEvaluator(seed_spec, frames, size, self.score, stage_weights,
                                       num_classes, score_size=self.score_size)
        why = self.evaluator.why_undefined(self.seed_cand)
        if why:
            raise SearchError(f"the seed architecture's {self.score.name} score is undefined at "
                              f"T = {frames}, score size {self.score_size}: {why} (pick another "
                              "--frames, --score-size or --seed-arch)")
        # Latency is left out of this lower bound: a table's predictions are measured and
        # interpolated, neither guaranteed monotone nor available for the tiniest layers.
        smallest = self.bound.smallest(self.seed_cand)
        over = self.over_budget(smallest, latency=False)
        if over:
            raise SearchError("no architecture in the search space can meet the budgets: even the "
                              "smallest one (every channel at the minimum, L = 1) has "
                              + "; ".join(over))
        over = self.over_budget(self.seed_cand)
        if over:
            raise SearchError("the seed architecture is already over budget: " + "; ".join(over)
                              + " (pass a smaller --seed-arch or raise the budget)")

    def costs_dict(self, cand: Candidate, latency: bool = True) -> dict[str, float]:
        flops, macs, params, layers, _ = self.evaluator.costs(cand)
        d = {"tinynas_flops": flops, "macs": macs, "params": params, "layers": layers}
        if latency and self.predictor is not None:
            d["latency_ms"] = self.latency_ms(cand)
            if self.budgets.latency_ratio is not None:
                d["latency_ratio"] = d["latency_ms"] / self.reference_predicted_ms
        return d

    def latency_ms(self, cand: Candidate) -> float:
        return float(self.predictor.predict_ms(spec_of(cand, self.frames, self.size,
                                                       head_hidden=self.seed_spec.head_hidden)))

    def over_budget(self, cand: Candidate, latency: bool = True) -> list[str]:
        return self.budgets.exceeded(self.costs_dict(cand, latency))

    def fingerprint(self) -> dict[str, Any]:
        """Everything (but the candidate count) that decides the result."""
        return {
            "frames": self.frames, "size": self.size, "score_size": self.score_size,
            "budgets": self.budgets.to_dict(),
            "space": self.space.to_dict(),
            "seed_arch": blocks_as_dicts(self.seed_cand),
            "head_hidden": self.seed_spec.head_hidden,
            "score": self.score.name,
            "stage_weights": list(self.stage_weights) if self.stage_weights is not None else None,
            "population": self.population,
            "seed": self.seed,
            "num_classes": self.num_classes,
            # only under a ratio budget, where it sets the predicted limit (and so that
            # checkpoints of other budgets stay valid)
            **({"latency_reference": blocks_as_dicts(self.reference.key())}
               if self.budgets.latency_ratio is not None else {}),
        }

    # ---- checkpoints --------------------------------------------------------
    def save_checkpoint(self, path: Path, state: dict) -> None:
        doc = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "config": self.fingerprint(), **state}
        atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")

    def load_checkpoint(self, path: Path) -> dict:
        """The resumable state in ``path``, every part of it checked: a checkpoint that is
        corrupt, from other settings, or edited by hand (a score that is not the
        candidate's, a counter below zero, an invalid candidate) is a SearchError naming
        the file and the field, never a resumed search that ends somewhere else."""
        from ..atomic import read_json_limited

        if not os.path.lexists(path):
            raise SearchError(f"--resume: no checkpoint at {path} (nothing to resume; run without "
                              "--resume to start)")
        doc = read_json_limited(path, MAX_CHECKPOINT_BYTES, what="search checkpoint",
                                error=SearchError)
        if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
            raise SearchError(f"{path}: not an e3d-search checkpoint (format "
                              f"{doc.get('format') if isinstance(doc, dict) else None!r:.60})")
        if doc.get("version") != CHECKPOINT_VERSION:
            raise SearchError(f"{path}: checkpoint version {doc.get('version')!r:.60}, expected "
                              f"{CHECKPOINT_VERSION}")
        mine = json.loads(json.dumps(self.fingerprint()))
        theirs = doc.get("config", {})
        if not isinstance(theirs, dict):
            raise SearchError(f"{path}: config: expected an object, found {type(theirs).__name__}")
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            details = "; ".join(f"{k}: checkpoint {theirs.get(k)!r:.80} vs now {mine.get(k)!r:.80}"
                                for k in diff[:6])
            raise SearchError(f"{path}: the checkpoint was made with different settings ({details}); "
                              "resume with the same settings or start a new search")
        return _CheckpointReader(self, path, doc).state()

    # ---- the loop -----------------------------------------------------------
    def run(self, *, checkpoint: Optional[Path], checkpoint_every: int, resume: bool,
            progress: bool, stop_after: Optional[int], handle_sigint: bool) -> SearchResult:
        rng = random.Random(self.seed)
        if resume:
            if checkpoint is None:
                raise SearchError("--resume: needs a checkpoint path")
            st = self.load_checkpoint(checkpoint)
            n = st["candidates"]
            rng.setstate(st["rng_state"])
            pop = st["population"]
            history = st["history"]
            counters = st["counters"]
            elapsed_before = st["elapsed_s"]
        else:
            n = 0
            s0 = self.evaluator.evaluate(self.seed_cand).score
            pop = [(s0, self.seed_cand)]
            history = [(0, s0)]
            counters = dict.fromkeys(COUNTERS, 0)
            elapsed_before = 0.0
        start_n = n
        pop_scores = [s for s, _ in pop]
        pop_cands = [c for _, c in pop]
        members = set(pop_cands)
        best = max(pop_scores)

        stop = {"flag": False}
        old_handler = None
        if handle_sigint and threading.current_thread() is threading.main_thread():
            def _on_sigint(signum, frame):
                if stop["flag"]:  # a second Ctrl-C: stop now (the last checkpoint stays valid)
                    raise KeyboardInterrupt
                stop["flag"] = True
            old_handler = signal.signal(signal.SIGINT, _on_sigint)

        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.total, initial=n, unit="cand", unit_scale=True,
                       dynamic_ncols=True, desc="e3d-search")
            bar.set_postfix_str(f"best={best:.6f}")

        def state() -> dict:
            return {"candidates": n, "rng_state": [rng.getstate()[0], list(rng.getstate()[1]),
                                                   rng.getstate()[2]],
                    "population": [[s, [list(b) for b in c]] for s, c in zip(pop_scores, pop_cands)],
                    "history": [list(h) for h in history], "counters": dict(counters),
                    "elapsed_s": elapsed_before + (time.perf_counter() - t0)}

        P = self.population
        total = self.total
        mutate = self.bound.mutate
        ev = self.evaluator
        costs = ev.costs
        score_from = ev.score_from
        inf = math.inf
        b = self.budgets
        bf = inf if b.tinynas_flops is None else b.tinynas_flops
        bm = inf if b.macs is None else b.macs
        bp = inf if b.params is None else b.params
        bl = inf if b.layers is None else b.layers
        bt = self.latency_limit_ms
        latency_ms = self.latency_ms
        rnd = rng.random
        accepted = counters["accepted"]
        over = counters["over_budget"]
        dups = counters["duplicates"]
        undefined = counters["score_undefined"]
        next_ckpt = (n // checkpoint_every + 1) * checkpoint_every
        t0 = time.perf_counter()
        last_bar_n = n
        try:
            while True:
                # Periodic work happens only at "events", so the hot loop stays lean.
                next_event = min(n + _EVENT_EVERY, next_ckpt, total,
                                 stop_after if stop_after is not None and stop_after > n else total)
                while n < next_event:
                    parent = pop_cands[int(rnd() * len(pop_cands))]
                    child = mutate(parent, rng)
                    n += 1
                    if child in members:
                        dups += 1
                        continue
                    flops, macs, params, layers, entries = costs(child)
                    if flops > bf or macs > bm or params > bp or layers > bl:
                        over += 1
                        continue
                    if bt is not None and latency_ms(child) > bt:
                        over += 1
                        continue
                    s = score_from(child, entries)
                    if s is None:  # undefined at this clip shape: never ranked, counted
                        undefined += 1
                        continue
                    if len(pop_cands) >= P:
                        if s <= pop_scores[0]:
                            continue
                        members.discard(pop_cands[0])
                        del pop_scores[0]
                        del pop_cands[0]
                    i = bisect.bisect_right(pop_scores, s)
                    pop_scores.insert(i, s)
                    pop_cands.insert(i, child)
                    members.add(child)
                    accepted += 1
                    if s > best:
                        best = s
                        history.append((n, s))
                counters.update(accepted=accepted, over_budget=over, duplicates=dups,
                                score_undefined=undefined)
                if bar is not None:
                    bar.update(n - last_bar_n)
                    last_bar_n = n
                    bar.set_postfix_str(f"best={best:.6f}", refresh=False)
                if n >= total:
                    break
                if checkpoint is not None and n >= next_ckpt:
                    self.save_checkpoint(checkpoint, state())
                if n >= next_ckpt:
                    next_ckpt += checkpoint_every
                if stop["flag"] or (stop_after is not None and n >= stop_after):
                    if checkpoint is not None:
                        self.save_checkpoint(checkpoint, state())
                    raise SearchInterrupted(n, checkpoint)
        finally:
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        seconds = time.perf_counter() - t0
        if checkpoint is not None:
            self.save_checkpoint(checkpoint, state())
        history = list(history)
        if history[-1][0] != n:
            history.append((n, best))  # closes the curve; not part of the resumable state

        population = []
        for s, c in zip(reversed(pop_scores), reversed(pop_cands)):
            flops, macs, params, layers, _ = costs(c)
            population.append(Member(s, c, flops, macs, params, layers))
        top = population[0]
        return SearchResult(
            spec=self._result_spec(top, n), best_score=top.score, tinynas_flops=top.tinynas_flops,
            macs=top.macs, params=top.params, layers=top.layers, candidates=n, seconds=seconds,
            candidates_this_run=n - start_n, population=population, history=history,
            counters=dict(counters), resumed_from=start_n, checkpoint=checkpoint)

    def check_latency(self, result: SearchResult, measurer: Optional[LatencyMeasurer],
                      finalists: int, step: float) -> None:
        """Measure ``finalists`` members of the population (``finalists.pick_finalists``)
        with the reference network and make ``result`` the best-scoring one that fits
        (the nearest if none does)."""
        limit = self.latency_limit_ms
        predicted = [self.latency_ms(m.candidate) for m in result.population]
        picked = pick_finalists(predicted, limit, max(finalists, 1), step)
        members = [result.population[i] for i in picked]
        verdict = check_finalists(
            [Finalist(i + 1, m.score,
                      spec_of(m.candidate, self.frames, self.size, name=f"finalist_rank{i + 1}",
                              head_hidden=self.seed_spec.head_hidden),
                      predicted[i], 1.0 - predicted[i] / limit)
             for i, m in zip(picked, members)], self.budgets,
            measurer=measurer if finalists > 0 else None,
            reference=self.reference, reference_predicted_ms=self.reference_predicted_ms,
            predicted_limit_ms=limit, frames=self.frames, size=self.size,
            num_classes=self.num_classes or 400)
        chosen = members[verdict.chosen]
        result.latency = verdict
        result.spec = self._result_spec(chosen, result.candidates, latency=verdict.to_dict())
        result.best_score = chosen.score
        result.tinynas_flops, result.macs = chosen.tinynas_flops, chosen.macs
        result.params, result.layers = chosen.params, chosen.layers

    def _result_spec(self, top: Member, n: int, latency: Optional[dict] = None) -> ArchSpec:
        from .. import __version__

        budgets = self.budgets.to_dict()
        provenance = {
            "source": "e3d-search",
            "method": "STEntr-Score evolutionary search (e3d_zoo.search)",
            "budgets": budgets,
            "budget_flops_convention": "tinynas_flops",
            "score": top.score,
            "score_name": self.score.name,
            "score_frames": self.frames,
            "score_size": self.score_size,
            "stage_weights": list(self.stage_weights) if self.stage_weights is not None else None,
            "seed": self.seed,
            "candidates": n,
            "population": self.population,
            "mutations_per_candidate": self.space.mutations_per_candidate,
            "num_classes": self.num_classes,
            "costs": {"tinynas_flops": top.tinynas_flops, "macs": top.macs, "params": top.params,
                      "layers": top.layers},
            "seed_arch": self.seed_spec.name,
            "space": "reference" if self.space == default_space() else self.space.to_dict(),
            "software": f"e3d-zoo {__version__}",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if latency is not None:
            provenance["latency"] = latency
        return spec_of(top.candidate, self.frames, self.size, name="searched",
                       head_hidden=self.seed_spec.head_hidden, provenance=provenance)


class _CheckpointReader:
    """Checks a checkpoint's state field by field against the search it resumes."""

    def __init__(self, job: "_Search", path: Path, doc: dict):
        self.job, self.path, self.doc = job, path, doc

    def bad(self, field: str, expected: str, found: Any) -> SearchError:
        return SearchError(f"{self.path}: corrupt search checkpoint: {field}: expected {expected}, "
                           f"found {found!r:.80}")

    def count(self, field: str, v: Any, maximum: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= maximum:
            raise self.bad(field, f"an integer in [0, {maximum}]", v)
        return v

    def state(self) -> dict:
        doc, job = self.doc, self.job
        n = doc.get("candidates")
        if isinstance(n, int) and not isinstance(n, bool) and n > job.total:
            raise SearchError(f"{self.path}: the checkpoint is at {n} candidates, past the "
                              f"requested total {job.total}; ask for at least that many")
        n = self.count("candidates", n, job.total)
        counters = doc.get("counters")
        if not isinstance(counters, dict) or set(counters) != set(COUNTERS):
            raise self.bad("counters", f"an object with {', '.join(COUNTERS)}", counters)
        counters = {k: self.count(f"counters.{k}", v, n) for k, v in counters.items()}
        if sum(counters.values()) > n:
            raise self.bad("counters", f"counts that sum to at most candidates ({n})", counters)
        elapsed = doc.get("elapsed_s", 0.0)
        if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) \
                or not math.isfinite(elapsed) or elapsed < 0:
            raise self.bad("elapsed_s", "a finite number >= 0", elapsed)
        return {"candidates": n, "rng_state": self.rng_state(doc.get("rng_state")),
                "population": self.population(doc.get("population")),
                "history": self.history(doc.get("history"), n), "counters": counters,
                "elapsed_s": float(elapsed)}

    def rng_state(self, rs: Any) -> tuple:
        try:
            state = (rs[0], tuple(rs[1]), rs[2])
            random.Random().setstate(state)
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):
            raise self.bad("rng_state", "a Python random.Random state", rs) from None
        return state

    def population(self, pop: Any) -> list:
        job = self.job
        if not isinstance(pop, list) or not 1 <= len(pop) <= job.population:
            raise self.bad("population", f"a list of 1 to {job.population} [score, blocks] pairs",
                           pop if not isinstance(pop, list) else f"{len(pop)} entries")
        out, seen, last = [], set(), -math.inf
        for i, entry in enumerate(pop):
            where = f"population[{i}]"
            if not isinstance(entry, list) or len(entry) != 2:
                raise self.bad(where, "a [score, blocks] pair", entry)
            score, blocks = entry
            cand = self.candidate(where, blocks)
            problems = job.bound.violations(cand) or job.over_budget(cand)
            if problems:
                raise self.bad(where, "a candidate of this search space within the budgets",
                               "; ".join(problems))
            true_score = job.evaluator.evaluate(cand).score
            if score != true_score:  # also catches NaN and anything edited by hand
                raise self.bad(f"{where}[0]", f"its candidate's score {true_score!r}", score)
            if score < last:
                raise self.bad(where, "scores in ascending order", score)
            if cand in seen:
                raise self.bad(where, "each candidate once", "a duplicate")
            last = score
            seen.add(cand)
            out.append((score, cand))
        return out

    def candidate(self, where: str, blocks: Any) -> tuple:
        if not isinstance(blocks, list) or len(blocks) != self.job.bound.n:
            raise self.bad(f"{where}[1]", f"a list of {self.job.bound.n} blocks", blocks)
        cand = []
        for j, b in enumerate(blocks):
            ok = (isinstance(b, list) and len(b) == 8 and b[0] in BLOCK_CLASSES
                  and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_CHANNELS
                          for v in b[1:]))
            if not ok:
                raise self.bad(f"{where}[1][{j}]", "[class, in, out, s, kt, k, L, btn]", b)
            cand.append(tuple(b))
        return tuple(cand)

    def history(self, history: Any, n: int) -> list:
        if not isinstance(history, list) or not history:
            raise self.bad("history", "a non-empty list of [candidates, score]", history)
        out, prev = [], -1
        for i, h in enumerate(history):
            if (not isinstance(h, list) or len(h) != 2 or isinstance(h[0], bool)
                    or not isinstance(h[0], int) or not prev <= h[0] <= n
                    or isinstance(h[1], bool) or not isinstance(h[1], (int, float))
                    or not math.isfinite(h[1])):
                raise self.bad(f"history[{i}]", f"[candidates (ascending, <= {n}), finite score]", h)
            prev = h[0]
            out.append((h[0], float(h[1])))
        return out


def search(frames: int = 13, size: int = 160, *,
           budgets: Union[None, Budgets, Mapping[str, float]] = None,
           space: Union[None, str, os.PathLike, Mapping, SearchSpace] = None,
           seed_arch: Union[None, str, os.PathLike, ArchSpec] = None,
           score: str = "stentr",
           stage_weights: Optional[Sequence[float]] = None,
           score_size: Optional[int] = None,
           population: int = DEFAULT_POPULATION,
           candidates: int = DEFAULT_CANDIDATES,
           seed: int = 0,
           num_classes: Optional[int] = 400,
           latency_predictor: Optional[LatencyPredictor] = None,
           latency_reference: Union[None, str, os.PathLike, ArchSpec] = None,
           finalists: int = DEFAULT_FINALISTS,
           finalist_step: float = DEFAULT_STEP,
           latency_measurer: Optional[LatencyMeasurer] = None,
           measure_rounds: int = DEFAULT_MEASURE_ROUNDS,
           measure_statistic: Optional[str] = None,
           accept_nearest: bool = False,
           out: Union[None, str, os.PathLike] = None,
           name: Optional[str] = None,
           checkpoint: Union[None, str, os.PathLike] = None,
           checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
           resume: bool = False,
           plots: bool = True,
           progress: bool = False,
           stop_after: Optional[int] = None,
           handle_sigint: bool = True) -> SearchResult:
    """Search for the highest-scoring architecture within ``budgets``.

    ``budgets``: a :class:`Budgets` or a dict with keys ``tinynas_flops``, ``macs``,
    ``params``, ``layers``, ``latency_ms``, ``latency_ratio``. ``out``: where to write the arch JSON
    (plus ``<stem>_progress.png`` and ``<stem>_population.png`` when ``plots``); its
    checkpoint defaults to ``<stem>.search-ckpt.json`` beside it. ``score_size``: the
    frame size the score is taken at (default ``size``, at which the costs are
    counted and the space's kernel rule applies; the reference's E3D-M and E3D-L
    configs score at 160). ``stop_after``
    stops (as Ctrl-C does) after that many candidates, leaving a checkpoint.

    Latency budgets (``latency_ms``, ``latency_ratio``; see ``finalists.py``): the
    evolution keeps candidates whose ``latency_predictor`` prediction fits; then
    ``finalists`` members of the final population (the best one, then the best ones
    predicted at least 1, 2, ... x ``finalist_step`` under the limit) are measured on the device,
    interleaved in one run with ``latency_reference`` (a zoo name, arch file or spec;
    default ``e3d_s``), ``measure_rounds`` rounds, by ``latency_measurer`` (default:
    this machine's runtime as the predictor's latency table describes it, judging on
    ``measure_statistic``: CPU time with 1 thread, else wall-clock medians). The result
    is the best-scoring finalist whose measured latency fits; if none does,
    :class:`LatencyBudgetMissed` is raised, or with ``accept_nearest`` the nearest is
    returned with ``result.fits`` False. ``finalists=0`` skips the measurement (e.g.
    searching for another device than this one): the result then fits the predicted
    budget only. Every figure is in ``result.latency`` and the arch JSON's
    ``provenance["latency"]``.

    All input is validated before any work; problems raise :class:`SearchError`.
    """
    _check_int("frames", frames, 1)
    _check_int("size", size, 1)
    if score_size is not None:
        _check_int("score_size", score_size, 1)
    _check_int("population", population, 1)
    _check_int("candidates", candidates, 0)
    _check_int("seed", seed, 0)
    _check_int("checkpoint_every", checkpoint_every, 1)
    _check_int("finalists", finalists, 0)
    if (isinstance(finalist_step, bool) or not isinstance(finalist_step, (int, float))
            or not 0 <= finalist_step < 1):
        raise SearchError(f"finalist_step (--finalist-step): expected a fraction in [0, 1), "
                          f"found {finalist_step!r}")
    _check_int("measure_rounds", measure_rounds, 1)
    if stop_after is not None:
        _check_int("stop_after", stop_after, 1)
    if num_classes is not None:
        _check_int("num_classes", num_classes, 1)
    if budgets is None:
        budgets = Budgets()
    elif not isinstance(budgets, Budgets):
        unknown = [k for k in budgets if k not in Budgets.__dataclass_fields__]
        if unknown:
            raise SearchError(f"budgets: unknown budget(s) {unknown}; expected some of "
                              f"{list(Budgets.__dataclass_fields__)}")
        budgets = Budgets(**budgets)
    if budgets.is_empty():
        raise SearchError("no budget given: the score grows without bound, so a search needs at "
                          "least one of --budget-flops, --budget-macs, --budget-params, "
                          "--budget-layers, --budget-latency-ms")
    if stage_weights is not None:
        try:
            stage_weights = tuple(float(w) for w in stage_weights)
        except (TypeError, ValueError):
            raise SearchError(f"stage weights: expected numbers, found {stage_weights!r}") from None
        if not all(math.isfinite(w) for w in stage_weights):
            raise SearchError(f"stage weights: expected finite numbers, found {list(stage_weights)}")
    get_score(score)
    space_obj = _resolve_space(space)
    seed_spec = _resolve_seed_arch(seed_arch, space_obj, frames, size)
    if score_size is not None:
        try:  # the space keeps the seed's strides: every candidate downsamples as it does
            seed_spec.with_clip(None, score_size)
        except ArchError as exc:
            raise SearchError(f"score_size (--score-size): {exc}") from None
    reference = None
    if budgets.has_latency:
        reference = _resolve_reference(latency_reference, frames, size)
        if finalists > 0 and latency_measurer is None and latency_predictor is not None:
            latency_measurer = _default_measurer(latency_predictor, measure_rounds,
                                                 measure_statistic, progress)
    job = _Search(frames, size, budgets, space_obj, seed_spec, score, stage_weights, population,
                  candidates, seed, num_classes, latency_predictor, score_size=score_size,
                  latency_reference=reference)
    out_path = Path(out) if out is not None else None
    if checkpoint is None and out_path is not None:
        checkpoint = default_checkpoint_path(out_path)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if out_path is not None and out_path.suffix.lower() != ".json":
        raise SearchError(f"--out {out_path}: expected a .json path for the architecture")
    for flag, p in (("--out", out_path), ("--checkpoint", ckpt_path)):
        if p is not None and p.is_dir():
            raise SearchError(f"{flag} {p}: is a folder, expected a .json file path")
    if plots and out_path is not None:
        from ..errors import require

        require("matplotlib", "plot", "the search plots (or pass --no-plots)")

    # One search per output and per checkpoint at a time: a second one fails at once
    # (naming the first one's pid) instead of both saying "wrote" and one result being lost.
    with contextlib.ExitStack() as held:
        for p in sorted({p for p in (out_path, ckpt_path) if p is not None}):
            held.enter_context(output_lock(p, what="search output"))
        result = job.run(checkpoint=ckpt_path, checkpoint_every=checkpoint_every, resume=resume,
                         progress=progress, stop_after=stop_after, handle_sigint=handle_sigint)
        if budgets.has_latency:
            job.check_latency(result, latency_measurer, finalists, finalist_step)
        _write_result(result, budgets, out_path, ckpt_path, name, plots, accept_nearest)
    return result


def _write_result(result: SearchResult, budgets: Budgets, out_path: Optional[Path],
                  ckpt_path: Optional[Path], name: Optional[str], plots: bool,
                  accept_nearest: bool) -> None:
    spec_name = name or (out_path.stem if out_path is not None else "searched")
    result.spec = result.spec.replace(name=spec_name)
    if result.fits is False and not accept_nearest:
        where = f" (the search itself is kept in {ckpt_path})" if ckpt_path else ""
        raise LatencyBudgetMissed(
            result.latency, result,
            hint=f"; nothing written{where}. Accept the nearest (--accept-nearest), measure more "
                 "finalists (--finalists), or relax the budget")
    if out_path is not None:
        result.spec.save(out_path)
        result.out = out_path
        if plots:
            from .plots import plot_population, plot_progress

            cost_name = next((k for k in ("tinynas_flops", "macs", "params", "layers")
                              if k in budgets.to_dict()), "tinynas_flops")
            result.plots = [
                plot_progress(result, out_path.with_name(out_path.stem + "_progress.png")),
                plot_population(result, out_path.with_name(out_path.stem + "_population.png"),
                                cost=cost_name, budget=budgets.to_dict().get(cost_name)),
            ]
