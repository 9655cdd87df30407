"""The search space: data, overrides, and constraint validity of every mutation."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e3d_zoo.errors import SearchError
from e3d_zoo.search.space import (BoundSpace, SearchSpace, default_space, load_space,
                                  round_channels)
from e3d_zoo.zoo import load_zoo_arch

def test_default_space_is_the_reference_search_space(reference, reference_dir):
    ref = reference["reference_search"]
    sp = default_space()
    assert [list(p) for p in sp.kernel_choices] == ref["kernel_choices_kt_k"]
    assert list(sp.layer_deltas) == ref["layer_deltas"]
    assert list(sp.channel_scales) == ref["channel_scales"]
    assert list(sp.bottleneck_ratios) == ref["bottleneck_ratios"]
    assert sp.max_channels == ref["max_channels"]
    assert sp.mutations_per_candidate == ref["mutations_per_candidate"]
    assert [dict(b) for b in sp.seed_structure] == ref["seed_structure"]
    # The reference file itself is a valid space file (descriptive keys are ignored).
    assert load_space(reference_dir / "e3d_reference.json") == sp


def test_round_channels_matches_reference_rounding():
    # Python's round-half-to-even, as the reference's smart_round: E3D-S's btn 176 = 1.5 * 120.
    assert round_channels(1.5 * 120) == 176
    assert round_channels(1.5 * 24) == 32
    assert round_channels(3) == 8
    assert round_channels(0.5 * 8) == 8


def test_space_overrides_from_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"kernel_choices_kt_k": [[3, 3]], "max_channels": 256}))
    sp = load_space(path)
    assert sp.kernel_choices == ((3, 3),)
    assert sp.max_channels == 256
    assert sp.channel_scales == default_space().channel_scales


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ('["a"]', "expected a JSON object"),
    ('{"kernel_choice": [[1, 3]]}', "unknown field(s) ['kernel_choice']"),
    ('{"kernel_choices_kt_k": [[1, 4]]}', "kernel_choices_kt_k"),
    ('{"channel_scales": []}', "channel_scales"),
    ('{"channel_scales": 2}', "channel_scales: expected a list"),
    ('{"max_channels": 4}', "max_channels"),
    ('{"layer_deltas": [0, 1]}', "layer_deltas"),
])
def test_malformed_space_file_names_file_and_field(tmp_path, content, needle):
    path = tmp_path / "bad_space.json"
    path.write_text(content)
    with pytest.raises(SearchError) as exc:
        load_space(path)
    assert "bad_space.json" in str(exc.value)
    assert needle in str(exc.value)


def test_missing_space_file():
    with pytest.raises(SearchError, match="no such search-space file"):
        load_space("/nonexistent/space.json")


def test_layer_budget_too_small_for_the_skeleton_is_a_contradiction():
    sp = default_space()
    with pytest.raises(SearchError, match="layer budget 10 leaves no room"):
        BoundSpace(sp, sp.seed_spec(13, 160), 160, layer_budget=10)


def test_violations_reports_broken_constraints():
    sp = default_space()
    seed = sp.seed_spec(13, 160)
    bound = BoundSpace(sp, seed, 160, layer_budget=83)
    assert bound.violations(seed.key()) == []
    blocks = [list(b) for b in seed.key()]
    blocks[3][2] = 640  # out > next block's out (96) ...
    blocks[4][1] = 640  # ... keep the channel chain consistent
    blocks[2][6] = 9    # L above floor(83 / 3 / 4) = 6
    problems = bound.violations(tuple(tuple(b) for b in blocks))
    text = "\n".join(problems)
    assert "blocks[3].out: expected <= the next block's out 96" in text
    assert "blocks[2].L: expected 1..6" in text


SEEDS = {"reference": None, "e3d_s": "e3d_s", "e3d_m": "e3d_m"}


@settings(max_examples=150, deadline=None)
@given(seed_name=st.sampled_from(sorted(SEEDS)),
       shape=st.sampled_from([(13, 160), (16, 224), (8, 96), (4, 40), (16, 312)]),
       layer_budget=st.sampled_from([None, 40, 83, 167]),
       rng_seed=st.integers(0, 2**32 - 1),
       steps=st.integers(1, 60),
       mutations=st.integers(1, 4))
def test_every_mutated_candidate_satisfies_all_constraints(seed_name, shape, layer_budget,
                                                           rng_seed, steps, mutations):
    frames, size = shape
    sp = SearchSpace(mutations_per_candidate=mutations)
    if SEEDS[seed_name] is None:
        seed = sp.seed_spec(frames, size)
    else:
        seed = load_zoo_arch(SEEDS[seed_name]).replace(frames=frames, size=size)
    bound = BoundSpace(sp, seed, size, layer_budget=layer_budget)
    # Zoo archs may use kernels the space would shrink at small sizes: start from the repaired seed.
    cand = seed.key()
    if bound.violations(cand):
        cand = tuple((b[0], b[1], b[2], b[3], b[4], bound.shrink_kernel(i, b[5]) if i < len(cand) - 1
                      else b[5], min(b[6], bound.max_layers[i] or b[6]), b[7])
                     for i, b in enumerate(cand))
    if bound.violations(cand):
        return  # e.g. e3d_m's L = 6 under a 40-layer budget: not a starting point here
    rng = random.Random(rng_seed)
    population = [cand]
    for _ in range(steps):
        parent = population[rng.randrange(len(population))]
        child = bound.mutate(parent, rng)
        assert bound.violations(child) == [], (parent, child)
        # the head conv never mutates; strides and classes never change
        assert child[-1][2:] == cand[-1][2:]
        population.append(child)
