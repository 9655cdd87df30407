"""read_json_limited / parse_json: the one bounded JSON read every input file goes through."""
from __future__ import annotations

import os

import pytest

from e3d_runtime.atomic import parse_json, read_json_limited
from e3d_runtime.errors import DataError, LatencyTableError, SearchError


def test_a_valid_document_is_returned(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"a": [1, 2.5, "x"], "b": null}', encoding="utf-8")
    assert read_json_limited(path, 1 << 10, what="list file", error=DataError) == \
        {"a": [1, 2.5, "x"], "b": None}


def test_syntax_errors_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "a": 1,\n  "b": ]\n}', encoding="utf-8")
    with pytest.raises(SearchError, match=r"broken\.json: not valid JSON: Expecting value at "
                                          r"line 3 column 8$"):
        read_json_limited(path, 1 << 10, what="search-space file", error=SearchError)


def test_deep_nesting_is_nested_too_deeply_not_a_recursion_error():
    with pytest.raises(DataError, match=r"^deep\.json: not a usable list file: nested too deeply$"):
        parse_json("[" * 200_000 + "]" * 200_000, "deep.json", what="list file", error=DataError)


def test_an_integer_too_long_to_convert_is_a_clear_error():
    with pytest.raises(DataError, match=r"^big\.json: not a usable list file: .*digits"):
        parse_json("[" + "9" * 5000 + "]", "big.json", what="list file", error=DataError)


def test_label_replaces_the_phrase_and_prefixes_syntax_errors():
    with pytest.raises(LatencyTableError, match=r"^t\.json: corrupt latency table: not valid JSON: "):
        parse_json("{", "t.json", what="latency table", error=LatencyTableError,
                   label="corrupt latency table")
    with pytest.raises(LatencyTableError, match=r"^t\.json: corrupt latency table: nested too deeply$"):
        parse_json("{\"a\":" * 100_000 + "1" + "}" * 100_000, "t.json", what="latency table",
                   error=LatencyTableError, label="corrupt latency table")


def test_the_bounds_of_read_text_limited_still_apply(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + "1," * 100 + "1]", encoding="utf-8")
    with pytest.raises(DataError, match=r"big\.json: .* bytes; a list file may have at most 64"):
        read_json_limited(path, 64, what="list file", error=DataError)
    with pytest.raises(DataError, match=r"missing\.json: no such list file"):
        read_json_limited(tmp_path / "missing.json", 64, what="list file", error=DataError)
    (tmp_path / "latin1.json").write_bytes(b'["caf\xe9"]')
    with pytest.raises(DataError, match=r"latin1\.json: not UTF-8 text"):
        read_json_limited(tmp_path / "latin1.json", 64, what="list file", error=DataError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"pipe\.json: not a regular file"):
        read_json_limited(fifo, 1 << 10, what="list file", error=DataError)
