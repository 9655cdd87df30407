"""Safe file IO: atomic writes, locked and recoverable folder swaps, bounded reads."""
from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from e3d_runtime.atomic import (atomic_dir, atomic_path, atomic_write_text, exchange, output_lock,
                            read_text_limited, recover_dir, remove_stale_temps)
from e3d_runtime.errors import E3DError, OutputError, OutputInUseError
from testkit import current_umask, hang_guard, start_holder

READ_ONLY_DIR = "/sys"  # refuses new entries even for root, so the test means the same in CI


def _visible(folder: Path) -> list[str]:
    """Entries but the (empty, hidden) lock files filelock leaves in place."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _mine(p: Path) -> bool:
    return (p / "MARK").is_file()


def test_atomic_write_replaces_whole_file_with_umask_mode(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    mask = current_umask()
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_path_failure_leaves_old_content(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.bin"]


def test_file_writes_name_the_output_when_they_cannot_happen(tmp_path):
    (tmp_path / "adir.json").mkdir()
    with pytest.raises(OutputError, match="adir.json: is a folder"):
        atomic_write_text(tmp_path / "adir.json", "x")
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(OutputError, match="afile is a file, not a folder"):
        atomic_write_text(tmp_path / "afile" / "x.json", "x")
    if Path(READ_ONLY_DIR).is_dir():
        with pytest.raises(OutputError, match=f"{READ_ONLY_DIR}/x.json: cannot write: permission denied"):
            atomic_write_text(f"{READ_ONLY_DIR}/x.json", "x")
    assert isinstance(OutputError("m"), OSError)  # callers that catch OSError still do


def test_atomic_dir_is_all_or_nothing(tmp_path):
    out = tmp_path / "exports"
    with atomic_dir(out, owned=_mine) as d:
        (d / "MARK").write_text("")
        (d / "model.onnx").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, owned=_mine) as d:
            (d / "model.onnx").write_text("v2-partial")
            raise KeyboardInterrupt
    assert (out / "model.onnx").read_text() == "v1"
    assert _visible(tmp_path) == ["exports"]
    with atomic_dir(out, owned=_mine) as d:
        (d / "model.xml").write_text("v3")
    assert sorted(x.name for x in out.iterdir()) == ["model.xml"]
    mask = current_umask()
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask


def test_atomic_dir_never_replaces_what_it_did_not_write(tmp_path):
    precious = tmp_path / "afile.txt"
    precious.write_text("a user's file")
    with pytest.raises(OutputError, match="afile.txt: exists and is a file"):
        with atomic_dir(precious, owned=_mine):
            pass
    assert precious.read_text() == "a user's file"
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="did not write \\(it has no MARK\\)"):
        with atomic_dir(thesis, owned=_mine, marker="MARK"):
            pass
    assert (thesis / "thesis.tex").read_text() == "years of work"
    link = tmp_path / "link"
    link.symlink_to(thesis)
    with pytest.raises(OutputError, match="symbolic link"):
        with atomic_dir(link, owned=_mine):
            pass
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty) as d:  # an empty folder holds nothing to lose
        (d / "x").write_text("1")
    assert (empty / "x").read_text() == "1"


@pytest.mark.parametrize("atomic_exchange", [True, False], ids=["exchange", "two-renames"])
def test_both_swap_methods_replace_the_folder(tmp_path, atomic_exchange):
    out = tmp_path / "o"
    for v in ("1", "2"):
        with atomic_dir(out, owned=_mine, atomic_exchange=atomic_exchange) as d:
            (d / "MARK").write_text(v)
    assert (out / "MARK").read_text() == "2"
    assert _visible(tmp_path) == ["o"]


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    if not exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this OS / file system")
    assert (a / "f").read_text() == "B" and (b / "f").read_text() == "A"


def _leftover(tmp_path: Path, name: str, kind: str, suffix: str, content: str) -> Path:
    p = tmp_path / f".{name}.{kind}.{suffix}"
    p.mkdir()
    (p / "MARK").write_text(content)
    return p


def test_a_kill_between_the_two_renames_is_finished_by_the_next_run(tmp_path):
    # The state a SIGKILL between `rename(out, old)` and `rename(ready, out)` leaves.
    _leftover(tmp_path, "out", "old", "aaaaaaaa", "previous")
    _leftover(tmp_path, "out", "ready", "bbbbbbbb", "new")
    _leftover(tmp_path, "out", "staging", "cccccccc", "half")
    report = recover_dir(tmp_path / "out")
    assert report["finished"] == ".out.ready.bbbbbbbb"
    assert (tmp_path / "out" / "MARK").read_text() == "new"
    assert _visible(tmp_path) == ["out"] and report["bytes_freed"] > 0


def test_a_kill_after_the_first_rename_of_an_old_layout_restores_the_previous_folder(tmp_path):
    _leftover(tmp_path, "out", "old", "aaaaaaaa", "previous")
    _leftover(tmp_path, "out", "staging", "cccccccc", "half")  # cannot tell if it is complete
    with atomic_dir(tmp_path / "out", owned=_mine) as d:  # the next run recovers first
        assert (tmp_path / "out" / "MARK").read_text() == "previous"
        (d / "MARK").write_text("next")
    assert (tmp_path / "out" / "MARK").read_text() == "next"
    assert _visible(tmp_path) == ["out"]


def test_leftovers_of_other_outputs_are_not_touched(tmp_path):
    _leftover(tmp_path, "out.v2", "staging", "aaaaaaaa", "theirs")
    _leftover(tmp_path, "out", "staging", "bbbbbbbb", "ours")
    recover_dir(tmp_path / "out")
    assert _visible(tmp_path) == [".out.v2.staging.aaaaaaaa"]


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path):
    holder = start_holder("lock", tmp_path / "out")
    try:
        with pytest.raises(OutputInUseError, match=f"in use by pid {holder.pid}") as info:
            with atomic_dir(tmp_path / "out"):
                pass
        assert info.value.pid == holder.pid
    finally:
        holder.communicate("\n", timeout=60)
    with atomic_dir(tmp_path / "out") as d:  # released: the next run gets it
        (d / "x").write_text("1")


def test_a_killed_writer_leaves_no_stale_lock_and_its_staging_is_cleaned(tmp_path):
    writer = start_holder("dir", tmp_path / "out")
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=60)
    staged = [p for p in tmp_path.iterdir() if ".staging." in p.name]
    assert len(staged) == 1 and (staged[0] / "big.bin").stat().st_size == 1 << 20
    with atomic_dir(tmp_path / "out") as d:  # the kernel dropped the dead process's lock
        (d / "x").write_text("1")
    assert _visible(tmp_path) == ["out"]


def test_stale_temporary_files_are_removed_and_nothing_else(tmp_path):
    keep = ["last.pt", "log.csv", ".hidden", "notes.tmp"]
    stale = [".last.tmp.ab12cd34.pt", ".log.csv.x1y2z3w4.tmp"]
    for name in keep + stale:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_bounded_reads_refuse_devices_pipes_folders_and_oversize(tmp_path):
    with pytest.raises(E3DError, match="/dev/zero: not a regular file"):
        read_text_limited("/dev/zero", 1 << 20, what="config file")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # no writer: a blocking open would never return; the guard fails the test instead
    with hang_guard(), pytest.raises(E3DError, match="pipe: not a regular file"):
        read_text_limited(fifo, 1 << 20)
    with pytest.raises(E3DError, match="is a folder, expected an arch file"):
        read_text_limited(tmp_path, 10, what="arch file")
    big = tmp_path / "big.json"
    big.write_text("x" * 101)
    with pytest.raises(E3DError, match="101 bytes; a config file may have at most 100"):
        read_text_limited(big, 100, what="config file")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok\xe9")
    with pytest.raises(E3DError, match=r"not UTF-8 text \(byte 0xe9 at offset 2\)"):
        read_text_limited(latin, 100)
    assert read_text_limited(big, 101) == "x" * 101


def test_output_lock_in_a_read_only_place_names_the_output(tmp_path):
    if not Path(READ_ONLY_DIR).is_dir():
        pytest.skip(f"no {READ_ONLY_DIR} here")
    with pytest.raises(OutputError, match=f"{READ_ONLY_DIR}/out: cannot write"):
        with output_lock(f"{READ_ONLY_DIR}/out"):
            pass
