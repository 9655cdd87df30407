"""Fixtures for tests/export (helpers live in tests/tiny_arch.py)."""
from __future__ import annotations

import pytest

from tiny_arch import tiny_model


@pytest.fixture(scope="module")
def tiny_model_mod():
    return tiny_model()
