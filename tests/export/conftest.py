"""Fixtures for tests/export (helpers live in export_helpers.py, importable by name)."""
from __future__ import annotations

import pytest

from export_helpers import tiny_model


@pytest.fixture(scope="module")
def tiny_model_mod():
    return tiny_model()
