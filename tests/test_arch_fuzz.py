"""Fuzzing the architecture loaders: whatever the input, a spec or an ArchError, promptly.

Inputs: real arch files with fields replaced by hostile values (huge and non-finite
numbers, wrong types, lone surrogates, deep nesting), free-form JSON, raw bytes and
TinyNAS structure text. A loaded spec must round-trip and have finite, non-negative
costs. Each example runs under a hang guard (far above the ~ms an example takes; the
speed itself is measured by ``python -m e3d_eval.fuzz_report``).

Profiles: ``ci`` (default; derandomized, a few hundred examples per property) and
``nightly`` (>= 10,000 per property, random): ``E3D_FUZZ_PROFILE=nightly pytest
tests/test_arch_fuzz.py``.
"""
from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e3d_runtime.errors import ArchError
from e3d_zoo import ArchSpec, load_arch
from e3d_zoo.complexity import summary as costs_of
from e3d_zoo.spec import BLOCK_CLASSES, MAX_NESTING
from e3d_zoo.zoo import ZOO_MODELS, arch_path
from testkit import hang_guard

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.function_scoped_fixture]
settings.register_profile("e3d-fuzz-ci", max_examples=400, deadline=None, derandomize=True,
                          suppress_health_check=_HEALTH, database=None)
settings.register_profile("e3d-fuzz-nightly", max_examples=10_000, deadline=None,
                          suppress_health_check=_HEALTH)
PROFILE = os.environ.get("E3D_FUZZ_PROFILE", "ci")
FUZZ = settings.get_profile(f"e3d-fuzz-{PROFILE}")

_BASES = {name: json.loads(arch_path(name).read_text()) for name in ZOO_MODELS}
_BLOCK_KEYS = ["class", "in", "out", "s", "kt", "k", "L", "btn", "nbitsA", "zz"]
_TOP_KEYS = ["name", "frames", "size", "head_hidden", "blocks", "provenance", "notes", "schema",
             "schema_version", "extra"]

_surrogates = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d"])
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 700), st.integers(-(2 ** 80), 2 ** 80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), _surrogates,
    st.sampled_from(BLOCK_CLASSES), st.sampled_from([1, 2, 3, 5, 7, 10 ** 18, 2 ** 63]))
_json = st.recursive(
    _scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.sampled_from(_TOP_KEYS + _BLOCK_KEYS) | st.text(max_size=4),
                                           kids, max_size=5)),
    max_leaves=24)


def _check_total(load) -> None:
    """``load()`` returns a consistent spec or raises ArchError; nothing else. Its costs
    are finite; its STEntr too, or None with the reason where the reference's arithmetic
    leaves it undefined (a kernel parallel to the clip: complexity.summary's contract)."""
    with hang_guard():
        try:
            spec = load()
        except ArchError:
            return
        summary = costs_of(spec)
    for key in ("params", "macs", "tinynas_flops", "layers"):
        assert math.isfinite(summary[key]), (key, summary[key])
    if summary["stentr"] is None:
        assert "STEntr is undefined" in summary["stentr_undefined"]
    else:
        assert math.isfinite(summary["stentr"])
    assert min(summary["params"], summary["macs"], summary["tinynas_flops"]) >= 0
    assert ArchSpec.from_json(spec.to_json()) == spec


def _dumps(doc) -> str:
    return json.dumps(doc)  # NaN/Infinity literals are part of the hostile input


@st.composite
def hostile_arch(draw):
    """A shipped architecture with a few fields, blocks or the block list replaced."""
    doc = json.loads(json.dumps(_BASES[draw(st.sampled_from(ZOO_MODELS))]))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "block", "blocks", "drop"]))
        if where == "top":
            doc[draw(st.sampled_from(_TOP_KEYS))] = draw(_json)
        elif where == "block" and isinstance(doc.get("blocks"), list) and doc["blocks"]:
            i = draw(st.integers(0, len(doc["blocks"]) - 1))
            if isinstance(doc["blocks"][i], dict):
                doc["blocks"][i][draw(st.sampled_from(_BLOCK_KEYS))] = draw(_json)
        elif where == "blocks":
            doc["blocks"] = draw(_json)
        elif doc:
            doc.pop(draw(st.sampled_from(sorted(doc))), None)
    return doc


@FUZZ
@given(hostile_arch())
def test_hostile_fields_give_a_spec_or_an_arch_error(doc):
    _check_total(lambda: ArchSpec.from_json(_dumps(doc), source="fuzz.json"))


@FUZZ
@given(_json)
def test_any_json_document_gives_a_spec_or_an_arch_error(doc):
    _check_total(lambda: ArchSpec.from_json(_dumps(doc), source="fuzz.json"))


@FUZZ
@given(st.sampled_from(ZOO_MODELS), st.sampled_from(["frames", "size", "in", "L", "btn", "k"]),
       st.integers(20, 12_000))
def test_huge_integer_literals_are_arch_errors(name, field, digits):
    text = json.dumps(_BASES[name]).replace('"frames": ', '"frames": ' + "9" * digits, 1) \
        if field == "frames" else _dumps({**_BASES[name], "blocks": [
            {**b, field: int("9" * min(digits, 4000))} for b in _BASES[name]["blocks"]]})
    with hang_guard(), pytest.raises(ArchError):
        ArchSpec.from_json(text, source="huge.json")


@FUZZ
@given(st.integers(1, 300_000), st.sampled_from(["[", "{\"a\":"]))
def test_deep_nesting_is_an_arch_error(depth, opener):
    closer = "]" if opener == "[" else "}"
    inner = "1" if opener != "[" else ""
    text = opener * depth + inner + closer * depth
    with hang_guard(), pytest.raises(ArchError):
        ArchSpec.from_json(text, source="deep.json")
    d = min(depth, 2000)
    nested = _dumps({**_BASES["e3d_s"], "provenance": {"x": 0}}).replace(
        '"x": 0', '"x": ' + opener * d + inner + closer * d)
    # levels below provenance: d containers, and the innermost dict's value one more
    levels = d if opener == "[" else d + 1
    with hang_guard():
        if levels > MAX_NESTING:
            with pytest.raises(ArchError, match="nested more than|nested too deeply"):
                ArchSpec.from_json(nested, source="deep_provenance.json")
        else:
            ArchSpec.from_json(nested, source="deep_provenance.json")


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["json", "txt"]))
def test_any_bytes_on_disk_give_a_spec_or_an_arch_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / f"f.{suffix}"
    path.write_bytes(data)
    _check_total(lambda: load_arch(path, frames=8, size=64) if suffix == "txt" else load_arch(path))


@st.composite
def tinynas_text(draw):
    blocks = json.loads(json.dumps(_BASES[draw(st.sampled_from(ZOO_MODELS))]["blocks"]))
    structures = draw(st.sampled_from(["list", "one", "hostile"]))
    if blocks and draw(st.booleans()):
        blocks[draw(st.integers(0, len(blocks) - 1))][draw(st.sampled_from(_BLOCK_KEYS))] = draw(_json)
    value = {"list": [blocks], "one": blocks, "hostile": draw(_json)}[structures]
    text = repr({"best_structures": value, "space_arch": "Cnn3DNet"})
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=6)) + text[cut:]
    return text


@FUZZ
@given(tinynas_text(), st.integers(-2, 5000), st.integers(-2, 10_000))
def test_tinynas_text_gives_a_spec_or_an_arch_error(text, frames, size):
    _check_total(lambda: ArchSpec.from_tinynas_text(text, frames=frames, size=size, source="t.txt"))


def test_special_paths_are_arch_errors(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        with hang_guard(), pytest.raises(ArchError, match="not a regular file|is a folder"):
            load_arch(path)
