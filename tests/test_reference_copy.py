"""The committed copy of the reference (tests/reference) is the shared one, byte for byte."""
from __future__ import annotations

import json

import pytest

from conftest import COMMITTED_REFERENCE, REFERENCE_FILES, SHARED_REFERENCE


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_committed_copy_is_byte_identical_to_the_shared_reference(name):
    committed = COMMITTED_REFERENCE / name
    assert committed.is_file(), f"{committed} is missing; copy it from {SHARED_REFERENCE}"
    shared = SHARED_REFERENCE / name
    if not shared.is_file():
        pytest.skip(f"no {SHARED_REFERENCE} beside this clone: the committed copy is the reference")
    assert committed.read_bytes() == shared.read_bytes(), (
        f"{committed} differs from {shared}; copy it again")


def test_committed_copy_holds_what_the_tests_read():
    ref = json.loads((COMMITTED_REFERENCE / "e3d_reference.json").read_text(encoding="utf-8"))
    assert set(ref["models"]) == {"e3d_s", "e3d_m", "e3d_l"}
    assert {"stentr_score_T13_R160", "tinynas_flops_T13_R160", "layers"} <= set(ref["check_values_e3d_s"])
    assert "seed_structure" in ref["reference_search"]
