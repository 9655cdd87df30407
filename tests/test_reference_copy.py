"""The committed copy of the reference (tests/reference) is the shared one, byte for byte."""
from __future__ import annotations

import json

import pytest

NAMES = ("E3D_DEFINITIONS.md", "e3d_reference.json")


@pytest.mark.parametrize("name", NAMES)
def test_committed_copy_is_byte_identical_to_the_shared_reference(name, reference_locations):
    shared_dir, committed_dir, names = reference_locations
    assert name in names
    committed = committed_dir / name
    assert committed.is_file(), f"{committed} is missing; copy it from {shared_dir}"
    shared = shared_dir / name
    if not shared.is_file():
        pytest.skip(f"no {shared_dir} beside this clone: the committed copy is the reference")
    assert committed.read_bytes() == shared.read_bytes(), f"{committed} differs from {shared}; copy it again"


def test_committed_copy_holds_what_the_tests_read(reference_locations):
    _, committed_dir, _ = reference_locations
    ref = json.loads((committed_dir / "e3d_reference.json").read_text(encoding="utf-8"))
    assert set(ref["models"]) == {"e3d_s", "e3d_m", "e3d_l"}
    assert {"stentr_score_T13_R160", "tinynas_flops_T13_R160", "layers"} <= set(ref["check_values_e3d_s"])
    assert "seed_structure" in ref["reference_search"]
