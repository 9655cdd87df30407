"""Evolution: budgets, determinism, checkpoint/resume, interruption, output, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from e3d_zoo import complexity, stentr
from e3d_zoo.errors import SearchError
from e3d_zoo.search import SearchInterrupted, search
from e3d_zoo.search.space import spec_of
from e3d_zoo.spec import load_arch
from e3d_zoo.zoo import load_zoo_arch
from testkit import hang_guard, wait_for_file

S_BUDGETS = {"tinynas_flops": 2.0e9, "layers": 83}


def _state(result):
    return ([(m.score, m.candidate) for m in result.population], result.history,
            result.counters, result.candidates)


def test_search_respects_budgets_and_improves_on_the_seed():
    r = search(13, 160, budgets=S_BUDGETS, candidates=4000, seed=1)
    assert r.candidates == 4000
    seed_score = r.history[0][1]
    assert r.best_score > seed_score
    for m in r.population:
        spec = spec_of(m.candidate, 13, 160)
        assert complexity.tinynas_flops(spec, 13, 160) <= 2.0e9
        assert complexity.num_layers(spec) <= 83
        assert stentr.stentr_score(spec) == m.score
    scores = [m.score for m in r.population]
    assert scores == sorted(scores, reverse=True)
    assert len({m.candidate for m in r.population}) == len(r.population)  # deduplicated


def test_same_seed_same_result_and_other_seed_differs():
    a = search(13, 160, budgets=S_BUDGETS, candidates=3000, seed=7, population=64)
    b = search(13, 160, budgets=S_BUDGETS, candidates=3000, seed=7, population=64)
    c = search(13, 160, budgets=S_BUDGETS, candidates=3000, seed=8, population=64)
    assert _state(a) == _state(b)
    assert a.spec.blocks == b.spec.blocks
    assert _state(a)[0] != _state(c)[0]


def test_injected_stop_then_resume_equals_uninterrupted(tmp_path):
    kw = dict(budgets=S_BUDGETS, candidates=5000, seed=3, population=32)
    full = search(13, 160, **kw)
    ckpt = tmp_path / "run.ckpt.json"
    with pytest.raises(SearchInterrupted) as exc:
        search(13, 160, checkpoint=ckpt, checkpoint_every=700, stop_after=2345, **kw)
    assert exc.value.candidates == 2345 and ckpt.is_file()
    assert json.loads(ckpt.read_text())["candidates"] == 2345
    resumed = search(13, 160, checkpoint=ckpt, checkpoint_every=700, resume=True, **kw)
    assert resumed.resumed_from == 2345
    assert resumed.candidates_this_run == 5000 - 2345
    assert _state(resumed) == _state(full)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_a_finished_run_with_more_candidates_equals_the_longer_run(tmp_path):
    kw = dict(budgets=S_BUDGETS, seed=4, population=32)
    ckpt = tmp_path / "ck.json"
    search(13, 160, candidates=1500, checkpoint=ckpt, **kw)
    longer = search(13, 160, candidates=3000, checkpoint=ckpt, resume=True, **kw)
    assert _state(longer) == _state(search(13, 160, candidates=3000, **kw))


def test_resume_with_different_settings_is_refused(tmp_path):
    ckpt = tmp_path / "ck.json"
    search(13, 160, budgets=S_BUDGETS, candidates=500, seed=1, checkpoint=ckpt, population=16)
    with pytest.raises(SearchError, match=r"different settings \(seed: checkpoint 1 vs now 2"):
        search(13, 160, budgets=S_BUDGETS, candidates=500, seed=2, checkpoint=ckpt,
               population=16, resume=True)
    with pytest.raises(SearchError, match="no checkpoint at"):
        search(13, 160, budgets=S_BUDGETS, candidates=500, checkpoint=tmp_path / "none.json",
               resume=True)


def test_sigint_leaves_a_resumable_checkpoint(tmp_path, capsys):
    """A real Ctrl-C (SIGINT to the e3d-search process), then --resume."""
    out = tmp_path / "arch.json"
    ckpt = tmp_path / "arch.search-ckpt.json"
    args = ["--frames", "13", "--size", "160", "--budget-flops", "2e9", "--budget-layers", "83",
            "--candidates", "3000000", "--population", "32", "--seed", "5",
            "--checkpoint-every", "5000", "--out", str(out), "--no-plots", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "e3d_zoo.cli.search", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        # the search loop is running once the first checkpoint exists
        wait_for_file(ckpt, proc, "the first checkpoint", timeout=120)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    stopped_at = json.loads(ckpt.read_text())["candidates"]
    assert 0 < stopped_at < 3_000_000
    assert not out.exists()  # no half-written result
    # `e3d-search ... --resume` to the interruption point + 2000 equals an uninterrupted run.
    from e3d_zoo.cli.search import main

    total = stopped_at + 2000
    args[args.index("--candidates") + 1] = str(total)
    capsys.readouterr()
    assert main(args + ["--resume", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed_from"] == stopped_at and summary["candidates"] == total
    full = search(13, 160, candidates=total, budgets=S_BUDGETS, population=32, seed=5)
    assert load_arch(out).key() == full.spec.key()
    assert summary["best_score"] == full.best_score
    saved = json.loads(ckpt.read_text())
    population = [(s, tuple(tuple(b) for b in c)) for s, c in saved["population"]]
    assert population == [(m.score, m.candidate) for m in reversed(full.population)]


def test_output_arch_has_provenance_and_builds(tmp_path, tiny_spec):
    import torch

    import e3d_zoo

    out = tmp_path / "found.json"
    # T = 5: at T = 4 the tiny net's (3, 3, 3) kernels are parallel to (4, 4, 4) (undefined)
    budget = complexity.tinynas_flops(tiny_spec, 5, 64) * 1.5
    r = search(5, 64, budgets={"tinynas_flops": budget, "params": 60_000}, seed_arch=tiny_spec,
               candidates=1500, seed=0, out=out, num_classes=10, population=16)
    spec = load_arch(out)
    prov = spec.provenance
    assert prov["score"] == r.best_score == stentr.stentr_score(spec)
    assert prov["budgets"] == {"tinynas_flops": budget, "params": 60_000}
    assert prov["seed"] == 0 and prov["candidates"] == 1500
    assert prov["software"] == f"e3d-zoo {e3d_zoo.__version__}"
    assert prov["date"] and prov["score_name"] == "stentr"
    assert spec.name == "found" and spec.head_hidden == tiny_spec.head_hidden
    assert complexity.params(spec, num_classes=10) <= 60_000
    for png in r.plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = e3d_zoo.create_model(out, num_classes=10).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 5, 64, 64))
    assert y.shape == (1, 10)
    assert sum(p.numel() for p in model.parameters()) == r.params


def test_entropy_ablation_scores_without_refinement():
    r = search(13, 160, budgets=S_BUDGETS, candidates=2000, seed=0, score="entropy")
    assert r.best_score == stentr.entropy_score(r.spec)
    assert r.best_score != stentr.stentr_score(r.spec)


def test_stage_weights_route_to_the_weighted_score():
    w = [0.0, 0.0, 1.0, 1.0, 2.0]
    r = search(13, 160, budgets=S_BUDGETS, candidates=1000, seed=0, stage_weights=w)
    assert r.best_score == stentr.stentr_score(r.spec, stage_weights=w)


class FlopsProportionalLatency:
    """Test double for a latency table (issue 5 implements the real one): 1 ms per GFLOP."""

    def predict_ms(self, spec):
        return complexity.tinynas_flops(spec, spec.frames, spec.size) / 1e9


def test_latency_budget_uses_the_predictor_interface():
    r = search(13, 160, budgets={"latency_ms": 1.5, "layers": 83}, candidates=1500, seed=0,
               latency_predictor=FlopsProportionalLatency(), finalists=0)
    assert all(m.tinynas_flops / 1e9 <= 1.5 for m in r.population)
    # not measured (finalists=0): said so, in the result and the arch's provenance
    assert r.fits is None and r.latency.measured is False
    lat = r.spec.provenance["latency"]
    assert lat["measured"] is False and lat["fits"] is None and "not measured" in lat["verdict"]
    assert lat["chosen"]["predicted_ms"] <= 1.5
    with pytest.raises(SearchError, match="needs a latency predictor"):
        search(13, 160, budgets={"latency_ms": 1.5}, candidates=10)
    # a predictor that names no device cannot have its finalists measured: said before any work
    with pytest.raises(SearchError, match="names no device"):
        search(13, 160, budgets={"latency_ms": 1.5, "layers": 83}, candidates=10,
               latency_predictor=FlopsProportionalLatency())


def test_latency_ratio_budget_is_relative_to_the_reference_prediction():
    """Under ``latency_ratio`` r the evolution's limit is r x the reference's prediction."""
    pred = FlopsProportionalLatency()
    e3d_s = complexity.tinynas_flops(load_zoo_arch("e3d_s"), 13, 160) / 1e9
    r = search(13, 160, budgets={"latency_ratio": 0.9, "layers": 83}, candidates=1500, seed=0,
               latency_predictor=pred, finalists=0)
    assert r.latency.reference == "e3d_s"
    assert r.latency.reference_predicted_ms == pytest.approx(e3d_s)
    assert r.latency.predicted_limit_ms == pytest.approx(0.9 * e3d_s)
    assert all(m.tinynas_flops / 1e9 <= 0.9 * e3d_s for m in r.population)
    assert r.spec.provenance["budgets"] == {"latency_ratio": 0.9, "layers": 83}


@pytest.mark.parametrize("kwargs, needle", [
    (dict(budgets={"tinynas_flops": 1e6}), "no architecture in the search space can meet"),
    (dict(budgets={"layers": 83, "tinynas_flops": 2e9}, seed_arch="e3d_m"),
     "seed architecture is already over budget"),
    (dict(budgets={"tinynas_flops": 2e9}, score="zen"), "unknown score 'zen'"),
    (dict(budgets={}), "no budget given"),
    (dict(budgets={"flops": 2e9}), "unknown budget(s) ['flops']"),
    (dict(budgets={"tinynas_flops": -1}), "expected a positive number"),
    (dict(budgets={"tinynas_flops": 2e9}, stage_weights=[1, 2]), "expected 5 weights"),
    (dict(budgets={"tinynas_flops": 2e9}, space={"max_channels": 2}), "max_channels"),
    (dict(budgets={"tinynas_flops": 2e9}, population=0), "population: expected an integer >= 1"),
    (dict(budgets={"tinynas_flops": 2e9, "layers": 83},
          space={"kernel_choices_kt_k": [[1, 3]]}), "seed architecture breaks"),
])
def test_bad_input_fails_before_any_work(tmp_path, kwargs, needle):
    if kwargs.get("seed_arch") == "e3d_m":
        from e3d_zoo.zoo import load_zoo_arch

        kwargs["seed_arch"] = load_zoo_arch("e3d_m")
    out = tmp_path / "never.json"
    # refused up front: a billion candidates would run into the hang guard
    with hang_guard(), pytest.raises(SearchError) as exc:
        search(13, 160, candidates=10**9, out=out, **kwargs)
    assert needle in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_score_size_scores_at_another_frame_size_than_the_costs(tmp_path):
    """The reference's E3D-M config: FLOPs and the space at 224, STEntr at 160."""
    out = tmp_path / "m160.json"
    r = search(16, 224, budgets={"tinynas_flops": 5.0e9, "layers": 83}, score_size=160,
               candidates=3000, seed=0, population=32, out=out, plots=False)
    spec = load_arch(out)
    assert (spec.frames, spec.size) == (16, 224)
    assert spec.provenance["score_size"] == 160 and spec.provenance["score_frames"] == 16
    assert r.best_score == spec.provenance["score"] == stentr.stentr_score(spec, 16, 160)
    assert r.best_score != stentr.stentr_score(spec, 16, 224)
    assert r.tinynas_flops == complexity.tinynas_flops(spec, 16, 224) <= 5.0e9
    for m in r.population:
        assert stentr.stentr_score(spec_of(m.candidate, 16, 224), 16, 160) == m.score
    assert r.summary()["score_size"] == 160


def test_candidates_with_undefined_scores_are_counted_never_ranked():
    from e3d_zoo.search.space import SearchSpace
    from e3d_zoo.spec import ArchSpec

    # At T = 10, R = 160 a (3, 3, 3) kernel at r = 10 is parallel to (10, 10, 10): the
    # reference's 1 - cos is not positive. The seed uses (1, 3) there; mutations reach (3, 3).
    blocks = [b.to_dict() for b in SearchSpace().seed_spec(10, 160).blocks]
    for b in blocks[3:5]:
        b["kt"], b["k"] = 1, 3
    seed = ArchSpec.from_dict({"name": "seed", "frames": 10, "size": 160, "blocks": blocks})
    r = search(10, 160, budgets=S_BUDGETS, seed_arch=seed, candidates=3000, seed=0, population=32)
    assert r.counters["score_undefined"] > 0 and r.summary()["score_undefined"] > 0
    for m in r.population:
        assert stentr.stentr_score(spec_of(m.candidate, 10, 160)) == m.score
    with pytest.raises(SearchError, match=r"seed architecture's stentr score is undefined at T = 10, "
                                          r"score size 160: blocks\[3\].*parallel"):
        search(10, 160, budgets=S_BUDGETS, candidates=10)
