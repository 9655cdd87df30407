"""The fast evaluator equals complexity.py / stentr.py on many random candidates."""
from __future__ import annotations

import random

import pytest

from e3d_zoo import ArchError, complexity, stentr
from e3d_zoo.search.evaluate import FastEvaluator
from e3d_zoo.search.scores import get_score
from e3d_zoo.search.space import BoundSpace, SearchSpace, spec_of
from e3d_zoo.zoo import load_zoo_arch


def _random_candidates(seed_spec, size, n, rng_seed, layer_budget=None):
    sp = SearchSpace(mutations_per_candidate=3)
    bound = BoundSpace(sp, seed_spec, size, layer_budget=layer_budget)
    rng = random.Random(rng_seed)
    pool = [seed_spec.key()]
    for _ in range(n):
        pool.append(bound.mutate(pool[rng.randrange(len(pool))], rng))
    return pool


def _reference_score(spec, frames, size, weights=None, refine=True):
    try:
        return stentr.stentr_score(spec, frames, size, weights, refine=refine)
    except ArchError:
        return None


# (frames, size, score_size): the reference shapes, E3D-M/L's "score at 160", T = 8 where
# (1, 5, 5) at r = 40 is parallel but finite, T = 10 / 5 where (3, 3, 3) kernels at r = 10 / 5
# are parallel and undefined, and odd shapes.
SHAPES = [(13, 160, None), (16, 224, 160), (16, 312, 160), (8, 160, None), (10, 160, None),
          (5, 224, 160), (7, 100, None), (16, 312, None)]


@pytest.mark.parametrize("frames, size, score_size", SHAPES)
@pytest.mark.parametrize("score_name", ["stentr", "entropy"])
def test_fast_costs_and_score_are_bit_identical_to_the_reference(frames, size, score_size, score_name):
    seed = SearchSpace().seed_spec(frames, size)
    at = size if score_size is None else score_size
    ev = FastEvaluator(seed, frames, size, get_score(score_name), num_classes=400, score_size=score_size)
    weights = (0.1, 0.2, 0.3, 0.5, 1.0)
    ev_w = FastEvaluator(seed, frames, size, get_score(score_name), stage_weights=weights,
                         num_classes=400, score_size=score_size)
    refine = score_name == "stentr"
    undefined = 0
    for cand in _random_candidates(seed, size, 300, rng_seed=frames * 1000 + size):
        spec = spec_of(cand, frames, size)
        c = ev.evaluate(cand)
        expected = _reference_score(spec, frames, at, refine=refine)
        assert c.score == expected  # None where the reference's arithmetic gives inf / nan
        undefined += expected is None
        assert (ev.why_undefined(cand) is None) == (expected is not None)
        assert c.tinynas_flops == complexity.tinynas_flops(spec, frames, size)
        assert c.macs == complexity.macs(spec, frames, size, num_classes=400)
        assert c.params == complexity.params(spec, num_classes=400)
        assert c.layers == complexity.num_layers(spec)
        assert ev_w.evaluate(cand).score == _reference_score(spec, frames, at, weights, refine=refine)
    if not refine:
        assert undefined == 0  # alpha = 1: the ablation is always defined
    elif frames == 10:
        assert undefined > 0


def test_fast_evaluator_reproduces_the_e3d_s_check_values(e3d_s_checks):
    spec = load_zoo_arch("e3d_s")
    ev = FastEvaluator(spec, 13, 160, get_score("stentr"), num_classes=400)
    c = ev.evaluate(spec.key())
    assert round(c.score, 6) == e3d_s_checks["stentr_score_T13_R160"]
    assert c.tinynas_flops == e3d_s_checks["tinynas_flops_T13_R160"]
    assert c.macs == e3d_s_checks["conv_linear_macs_T13_R160_400_classes"]
    assert c.params == e3d_s_checks["params_with_head_hidden2048_400_classes"]
    assert c.layers == e3d_s_checks["layers"]


def test_backbone_only_costs_without_head():
    spec = load_zoo_arch("e3d_m")
    ev = FastEvaluator(spec, 16, 224, get_score("stentr"), num_classes=None)
    c = ev.evaluate(spec.key())
    assert c.params == complexity.params(spec, num_classes=None)
    assert c.macs == complexity.macs(spec, 16, 224, num_classes=None)
