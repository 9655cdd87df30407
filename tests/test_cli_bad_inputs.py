"""Every CLI against the table of hostile inputs in ``e3d_eval.bad_inputs``.

Each row must end with a non-zero exit, no traceback, and an error holding the row's
fragments: the input (a flag, a value or a path) and what is wrong with it. Rows run
in-process; the same table runs as real processes in ``python -m e3d_eval.fuzz_report``.
Add rows there.
"""
from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from e3d_eval.bad_inputs import ENTRY_POINTS, available, case_table, make_fixtures

TABLE = case_table()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("bad_inputs"))


def _run(prog: str, argv: list[str]) -> int:
    module, func = ENTRY_POINTS[prog].split(":")
    main = getattr(importlib.import_module(module), func)
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return exc.code


@pytest.mark.parametrize("key", list(TABLE))
def test_bad_input_gives_one_clean_error(key, root, capsys):
    case = TABLE[key]
    ok, why = available(case, root)
    if not ok:
        pytest.skip(why)
    argv, expect = case.format(root)
    rc = _run(case.prog, argv)
    err = capsys.readouterr().err
    assert rc not in (0, None), f"exit 0 for a bad input; stderr: {err[-500:]}"
    assert "Traceback" not in err
    for fragment in expect:
        assert fragment in err, f"the error does not say {fragment!r}: {err[-500:]}"
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) <= 1, errors  # one error line (argparse adds its usage line above it)


def test_the_table_covers_every_cli():
    """Every console script both distributions declare, at the entry point they declare."""
    scripts = {}
    for pyproject in (REPO / "pyproject.toml", REPO / "runtime" / "pyproject.toml"):
        scripts.update(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["scripts"])
    assert ENTRY_POINTS == scripts
    assert {c.prog for c in TABLE.values()} == set(ENTRY_POINTS)
    assert len(TABLE) >= 250
