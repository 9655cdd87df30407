"""Shared fixtures: tiny architectures, so the suite stays fast on 2 CPU cores, and the
reference facts every comparison with the published E3D family reads."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from e3d_zoo.spec import ArchSpec  # noqa: E402
from tiny_arch import TINY_BLOCKS, make_tiny_spec  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
# Beside the clone (this project's layout: <repo>/../shared/reference) or the copy
# committed under tests/reference; both relative to the repo, never a machine path.
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
COMMITTED_REFERENCE = REPO / "tests" / "reference"
REFERENCE_FILES = ("E3D_DEFINITIONS.md", "e3d_reference.json")


def find_reference_dir() -> Path:
    for folder in (SHARED_REFERENCE, COMMITTED_REFERENCE):
        if all((folder / name).is_file() for name in REFERENCE_FILES):
            return folder
    pytest.fail(f"the E3D reference files {list(REFERENCE_FILES)} are neither in {SHARED_REFERENCE} "
                f"nor in {COMMITTED_REFERENCE}; a reference comparison cannot be skipped")


@pytest.fixture(scope="session")
def reference_locations() -> tuple[Path, Path, tuple[str, ...]]:
    """(beside the repo, committed copy, file names): for the test that compares them."""
    return SHARED_REFERENCE, COMMITTED_REFERENCE, REFERENCE_FILES


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return find_reference_dir()


@pytest.fixture(scope="session")
def reference(reference_dir) -> dict:
    """``e3d_reference.json``: the three architectures, the search space, check values."""
    return json.loads((reference_dir / "e3d_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def e3d_s_checks(reference) -> dict:
    """E3D-S at 13 x 160^2: the reference's check values (E3D_DEFINITIONS.md)."""
    return reference["check_values_e3d_s"]


@pytest.fixture
def tiny_spec() -> ArchSpec:
    return make_tiny_spec()


@pytest.fixture
def tiny_arch_file(tmp_path, tiny_spec):
    path = tmp_path / "e3d_tiny.json"
    tiny_spec.save(path)
    return path
