"""Fixtures for tests/runtime (helpers live in runtime_helpers.py, importable by name)."""
from __future__ import annotations

import pytest

from runtime_helpers import tiny_model


@pytest.fixture(scope="module")
def tiny_model_mod():
    return tiny_model()
