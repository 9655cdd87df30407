"""Shared fixtures: tiny architectures, so the suite stays fast on 2 CPU cores."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from e3d_zoo.spec import ArchSpec  # noqa: E402
from tiny_arch import TINY_BLOCKS, make_tiny_spec  # noqa: E402,F401

@pytest.fixture
def tiny_spec() -> ArchSpec:
    return make_tiny_spec()


@pytest.fixture
def tiny_arch_file(tmp_path, tiny_spec):
    path = tmp_path / "e3d_tiny.json"
    tiny_spec.save(path)
    return path
