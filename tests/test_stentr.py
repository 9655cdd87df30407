"""STEntr is bit-identical to the reference implementation's arithmetic.

The oracle below computes the score the way the reference's code does (numpy arrays
and ``np.linalg.norm`` for alpha, ``np.log(np.sqrt(...))`` per layer, a running sum
from 0.0 over every layer up to a stage end, ``np.sum`` over weighted stages), written
from its ``get_alpha_w``, ``get_stentr_forward``, ``stentr_forward_pre_GAP`` and
``ratio_score``. ``e3d_zoo.stentr`` computes the same numbers with scalar arithmetic;
these tests hold it to the oracle bit for bit.
"""
from __future__ import annotations

import itertools
import random
import warnings

import numpy as np
import pytest

from e3d_zoo import ArchError, ArchSpec, stentr
from e3d_zoo.zoo import ZOO_MODELS, load_zoo_arch

from tiny_arch import make_tiny_spec


def ref_alpha(res, frames, kt, k):
    if k == 1:
        return 1.0
    a = np.array([frames, res, res])
    b = np.array([kt, k, k])
    a_unit = a / np.linalg.norm(a)
    b_unit = b / np.linalg.norm(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # -log(0), log(<0): inf / nan
        return -np.log(1 - np.sum(a_unit * b_unit))


def ref_layer_scores(block, frames, res, refine=True):
    """One entry per conv / residual layer, as the reference's blocks return them."""
    alpha = ref_alpha(res, frames, block.kt, block.k) if refine else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if not block.is_super:
            return [np.log(np.sqrt(block.in_channels * block.kt * block.k ** 2 * alpha))]
        out = []
        for cin, _, _ in block.residual_layers():
            out.append(np.log(np.sqrt(cin)) + np.log(np.sqrt(block.kt * block.k ** 2 * alpha))
                       + np.log(np.sqrt(block.btn)))
        return out


def ref_score(spec, frames, resolution, ratio=(0, 0, 0, 0, 1), refine=True):
    layer_list, stage_layer_count, stage_channels = [], [], []
    res = resolution
    for i, b in enumerate(spec.blocks):
        if b.stride == 2 and i > 0:
            stage_layer_count.append(len(layer_list))
            stage_channels.append(spec.blocks[i - 1].out_channels)
        res = int(res / b.stride)
        layer_list += ref_layer_scores(b, frames, res, refine)
    stage_layer_count.append(len(layer_list))
    stage_channels.append(spec.blocks[-1].out_channels)
    assert len(ratio) == len(stage_channels)
    stage_list = []
    for idx, w in enumerate(ratio):
        if w == 0:
            stage_list.append(0.0)
            continue
        acc = 0.0
        for j in range(stage_layer_count[idx]):
            acc += layer_list[j]
        stage_list.append((acc + np.log(stage_channels[idx])) * w)
    return np.sum(np.array(stage_list) * 1)


def test_check_values_of_the_reference(e3d_s_checks):
    spec = load_zoo_arch("e3d_s")
    assert round(stentr.stentr_score(spec, 13, 160), 6) == e3d_s_checks["stentr_score_T13_R160"]
    # (1, 5, 5) at T = 8, r = 40 is parallel to (T, r, r): alpha = -log(1.1e-16), no clamp
    assert round(stentr.stentr_score(spec, 8, 160), 6) == 206.480219


def test_alpha_is_bit_identical_over_a_grid_and_undefined_exactly_where_the_reference_is():
    finite = undefined = 0
    for frames, res, kt, k in itertools.product(range(1, 33, 3), range(1, 170), (1, 3, 5), (1, 3, 5, 7)):
        expected = ref_alpha(res, frames, kt, k)
        if np.isfinite(expected):
            assert stentr.refinement_factor(frames, res, kt, k) == expected, (frames, res, kt, k)
            finite += 1
        else:
            with pytest.raises(ArchError, match="undefined"):
                stentr.refinement_factor(frames, res, kt, k)
            undefined += 1
    assert finite > 20000 and undefined > 10


def _parallel_shapes():
    """Every (T, r, kt, k) with (T, r, r) parallel to (kt, k, k): where 1 - cos is 0,
    negative or a few ulps, depending on rounding."""
    for frames in range(1, 65):
        for kt in (1, 3, 5, 7):
            for k in (3, 5, 7):
                if (frames * k) % kt == 0:
                    yield frames, frames * k // kt, kt, k


def test_parallel_kernels_give_the_reference_value_or_a_clear_error():
    kinds = set()
    for frames, res, kt, k in _parallel_shapes():
        expected = ref_alpha(res, frames, kt, k)
        if np.isfinite(expected):
            kinds.add("finite")
            assert stentr.refinement_factor(frames, res, kt, k) == expected
        else:
            kinds.add("inf" if expected > 0 else "nan")
            with pytest.raises(ArchError, match=rf"\({kt}, {k}, {k}\) kernel at \(T, r, r\) = "
                                                rf"\({frames}, {res}, {res}\).*parallel"):
                stentr.refinement_factor(frames, res, kt, k)
    assert kinds == {"finite", "inf", "nan"}


def _random_spec(rng):
    """E3D-shaped: stem, 5 super-blocks (4 strided), head conv; random widths and kernels."""
    chans = [rng.choice((8, 16, 24)), rng.choice((16, 24, 32)), rng.choice((32, 48)),
             rng.choice((48, 64, 96)), rng.choice((96, 120)), rng.choice((120, 192, 256))]
    chans[2] = max(chans[2], chans[1])
    strides = (2, 2, 2, 2, 1, 2)
    blocks = [{"class": "Conv3DKXBNRELU", "in": 3, "out": chans[0], "s": 2, "kt": 1, "k": 3}]
    cin = chans[0]
    for i in range(5):
        cout = max(cin, chans[i + 1])
        kt, k = rng.choice(((1, 3), (1, 5), (3, 3), (3, 5), (1, 7)))
        blocks.append({"class": "SuperRes3DK1DWK1", "in": cin, "out": cout, "s": strides[i + 1],
                       "kt": kt, "k": k, "L": rng.randint(1, 6), "btn": rng.choice((16, 48, 96, 176))})
        cin = cout
    blocks.append({"class": "Conv3DKXBNRELU", "in": cin, "out": 512, "s": 1, "kt": 1, "k": 1})
    return ArchSpec.from_dict({"name": "random", "frames": 8, "size": 160, "blocks": blocks})


def test_network_scores_are_bit_identical_on_random_specs_and_clip_shapes():
    rng = random.Random(12)
    specs = [load_zoo_arch(n) for n in ZOO_MODELS] + [_random_spec(rng) for _ in range(60)]
    weights = [(0, 0, 0, 0, 1), (0.1, 0.2, 0.3, 0.5, 1.0), (0, 0, 1, 1, 6)]
    compared = undefined = 0
    for spec in specs:
        for frames, size in [(13, 160), (8, 160), (16, 224), (16, 312), (rng.randint(1, 40), rng.randint(32, 400))]:
            for w in weights:
                expected = ref_score(spec, frames, size, w)
                if not np.isfinite(expected):
                    with pytest.raises(ArchError, match=r"blocks\[\d\].*undefined"):
                        stentr.stentr_score(spec, frames, size, stage_weights=w)
                    undefined += 1
                    continue
                assert stentr.stentr_score(spec, frames, size, stage_weights=w) == expected
                compared += 1
            assert stentr.entropy_score(spec, frames, size) == ref_score(spec, frames, size, refine=False)
    assert compared > 500


def test_stage_weights_and_errors():
    spec = make_tiny_spec(frames=5)  # at T = 4 its (3, 3, 3) kernels are parallel to (4, 4, 4)
    stages = stentr.stage_scores(spec)
    assert len(stages) == 4
    w = [0.1, 0.2, 0.3, 1.0]
    assert stentr.stentr_score(spec, stage_weights=w) == ref_score(spec, 5, 32, w)
    with pytest.raises(ArchError, match="expected 4 weights"):
        stentr.stentr_score(spec, stage_weights=[1.0])
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ArchError, match="stage_weights: expected finite numbers"):
            stentr.stentr_score(spec, stage_weights=[0.1, 0.2, bad, 1.0])
    assert stentr.entropy_score(spec) != stentr.stentr_score(spec)


def test_undefined_score_names_the_architecture_and_block():
    spec = make_tiny_spec(frames=4, size=32)  # blocks[2]: (3, 3, 3) at (T, r, r) = (4, 4, 4)
    assert not np.isfinite(ref_score(spec, 4, 32, (0, 0, 0, 1)))
    with pytest.raises(ArchError, match=r"e3d_tiny: blocks\[2\]: SuperRes3DK1DWK1 block \(in 8, out 16\): "
                                        r"STEntr is undefined .* 1 - cos is 0, so alpha = -log\(0\) = inf"):
        stentr.stentr_score(spec)
    assert stentr.entropy_score(spec) == ref_score(spec, 4, 32, (0, 0, 0, 1), refine=False)
