"""Safe file IO: atomic writes, locked outputs and bounded reads.

* Writes go to a temporary name beside the target and are renamed over it, so a reader
  (or a killed run) sees the old content or the new, never half.
* A folder output (:func:`atomic_dir`) is built in a staging folder and swapped in whole,
  under a lock file (:func:`output_lock`): a second run on the same output fails at once
  with the first one's pid, and a run killed mid-swap is finished or undone by the next
  run (or :func:`recover_dir`). Regular files and folders this toolkit did not write are
  never replaced.
* Inputs are read through :func:`read_text_limited` (:func:`read_json_limited` for JSON):
  regular files only, a size cap, and UTF-8 checked, so ``/dev/zero`` or a FIFO given as a
  path is an error, not a hang.

Torch-free: the runtime package uses it too.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type

from .errors import E3DError, OutputError, OutputInUseError

# ---- bounded reads ---------------------------------------------------------------------------


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def read_bytes_limited(path: str | os.PathLike, limit: int, *, what: str = "file",
                       error: Type[E3DError] = E3DError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ``error`` names the path otherwise.

    Opened non-blocking and checked with fstat before reading, so a FIFO, a device or a
    folder fails at once instead of blocking or reading without end.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected {_a(what)}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{path}: is a folder, expected {_a(what)}")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: not a regular file (a device, pipe or socket), expected {_a(what)}")
        if st.st_size > limit:
            raise error(f"{path}: {st.st_size:,} bytes; {_a(what)} may have at most {limit:,}")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if total > limit:  # grew while we read it
        raise error(f"{path}: more than {limit:,} bytes; {_a(what)} may have at most {limit:,}")
    return b"".join(chunks)


def read_text_limited(path: str | os.PathLike, limit: int, *, what: str = "file",
                      error: Type[E3DError] = E3DError) -> str:
    """:func:`read_bytes_limited` decoded as UTF-8; bad bytes are an ``error`` naming the offset."""
    data = read_bytes_limited(path, limit, what=what, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                    f"expected {_a(what)}") from None


def parse_json(text: str, where: str | os.PathLike, *, what: str = "JSON file",
               error: Type[E3DError] = E3DError, label: Optional[str] = None) -> Any:
    """``json.loads(text)``; what cannot be parsed is one ``error`` naming ``where``.

    Syntax errors give the line and column; a document nested deeper than the parser's
    recursion limit, or an integer of more digits than Python converts, is "not a usable
    ``what``". ``label`` replaces that phrase and prefixes the syntax errors too (the
    latency table calls every such file a "corrupt latency table").
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        detail = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise error(f"{where}: {label}: {detail}" if label else f"{where}: {detail}") from None
    except RecursionError:
        detail = "nested too deeply"
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        detail = str(exc)
    raise error(f"{where}: {label or 'not a usable ' + what}: {detail}")


def read_json_limited(path: str | os.PathLike, limit: int, *, what: str = "JSON file",
                      error: Type[E3DError] = E3DError, label: Optional[str] = None) -> Any:
    """:func:`read_text_limited` parsed by :func:`parse_json`: one ``error`` naming ``path``
    for a missing, oversized, non-UTF-8 or unparsable file."""
    return parse_json(read_text_limited(path, limit, what=what, error=error), path, what=what,
                      error=error, label=label)


# ---- atomic files ----------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give the result the usual umask mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _output_error(path: Path, exc: OSError, what: str = "file") -> OutputError:
    """One message for every way a write can fail, naming the output the user gave."""
    if isinstance(exc, OutputError):
        return exc
    if isinstance(exc, IsADirectoryError):
        return OutputError(f"{path}: is a folder, expected {_a(what)} path")
    if isinstance(exc, NotADirectoryError) or (isinstance(exc, FileExistsError)
                                               and not path.parent.is_dir()):
        parent = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        return OutputError(f"{path}: cannot write: {parent} is a file, not a folder")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(f"{path}: cannot write: permission denied (read-only location?)")
    return OutputError(f"{path}: cannot write: {exc.strerror or exc}")


def _make_parent(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _output_error(path, exc, what) from None


def _temp_beside(path: Path, prefix: str, suffix: str) -> Tuple[int, str]:
    """A new temporary file in ``path``'s folder (made if missing), to be renamed onto
    ``path``; its name must match what :func:`remove_stale_temps` recognizes."""
    _make_parent(path, "file")
    if path.is_dir() and not path.is_symlink():
        raise OutputError(f"{path}: is a folder, expected a file path")
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    except OSError as exc:
        raise _output_error(path, exc) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    fd, tmp = _temp_beside(path, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _output_error(path, exc) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    For writers that insist on a file name (torch.save, onnx.save, matplotlib).
    The temporary name keeps the suffix so format detection by extension works.
    """
    path = Path(path)
    fd, tmp = _temp_beside(path, prefix=f".{path.stem}.tmp.", suffix=path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            _publish_mode(tmp_path)
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _output_error(path, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def remove_stale_temps(folder: str | os.PathLike) -> List[Path]:
    """Delete the temporary files killed writers left in ``folder`` (not below it).

    Only safe while the caller holds the folder's lock: a live writer's temporary file
    looks the same.
    """
    # the names _temp_beside gives: atomic_write_bytes' ".NAME.XXXXXXXX.tmp" and
    # atomic_path's ".STEM.tmp.XXXXXXXX.SUFFIX" (mkstemp's 8 random characters)
    pattern = re.compile(r"^\..+(\.[A-Za-z0-9_]{8}\.tmp|\.tmp\.[A-Za-z0-9_]{8}(\.[^.]+)?)$")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for p in Path(folder).iterdir():
            if pattern.match(p.name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


# ---- locks -----------------------------------------------------------------------------------


def lock_path_for(path: str | os.PathLike) -> Path:
    """The lock file of an output: hidden, beside it (a folder output is swapped whole)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _owner_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".owner")


def _describe_owner(lock: Path) -> tuple[str, Optional[int]]:
    try:
        owner = json.loads(_owner_path(lock).read_text(encoding="utf-8"))
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another process", None
    host = owner.get("host")
    since = owner.get("since")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    when = f", since {since}" if since else ""
    return f"pid {pid}{where}{when}", pid


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *, what: str = "output") -> Iterator[Path]:
    """Hold ``path``'s lock for the block; :class:`OutputInUseError` at once if it is held.

    The lock is ``filelock``'s (an OS lock, released by the kernel when a process dies,
    so a killed run never leaves a stale lock). Who holds it is recorded beside it for
    the error message. The hidden lock file itself stays, as filelock requires.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock_file = lock_path_for(path)
    _make_parent(path, what)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        who, pid = _describe_owner(lock_file)
        raise OutputInUseError(f"{path}: in use by {who} (another e3d run writes this {what}); "
                               f"wait for it to finish or choose another output", pid) from None
    except OSError as exc:  # named after the output: the lock file is our business
        raise _output_error(path, exc, what) from None
    owner = _owner_path(lock_file)
    try:
        atomic_write_text(owner, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)[:500]}))
        yield lock_file
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()  # before the release: a waiter that wins next writes its own
        lock.release()


# ---- atomic folders --------------------------------------------------------------------------

_LEFTOVER = "(staging|ready|old)"


def _leftovers(path: Path) -> Dict[str, List[Path]]:
    """Staging/ready/old folders that runs on ``path`` left beside it, oldest first."""
    rx = re.compile(rf"^\.{re.escape(path.name)}\.{_LEFTOVER}\.[A-Za-z0-9_]{{8}}$")
    found: Dict[str, List[Path]] = {"staging": [], "ready": [], "old": []}
    with contextlib.suppress(FileNotFoundError):
        for p in path.parent.iterdir():
            m = rx.match(p.name)
            if m and p.is_dir() and not p.is_symlink():
                found[m.group(1)].append(p)
    for kind in found:
        found[kind].sort(key=lambda p: p.stat().st_mtime)
    return found


def _tree_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def recover_dir(path: str | os.PathLike) -> Dict[str, object]:
    """Finish or undo a folder swap that a killed run left, and delete its leftovers.

    ``path`` missing with a complete staged result (``.NAME.ready.*``) beside it: the new
    folder is moved into place (the swap is finished). Missing with only the previous
    folder (``.NAME.old.*``): the previous folder is restored. Then every staging, ready
    and old folder of ``path`` is deleted. Call it while holding ``path``'s lock.
    """
    path = Path(path)
    found = _leftovers(path)
    report: Dict[str, object] = {"path": str(path), "finished": None, "restored": None,
                                 "removed": [], "bytes_freed": 0}
    if not os.path.lexists(path):
        if found["ready"]:
            src = found["ready"].pop()
            os.replace(src, path)
            report["finished"] = src.name
        elif found["old"]:
            src = found["old"].pop()
            os.replace(src, path)
            report["restored"] = src.name
    for kind in ("staging", "ready", "old"):
        for p in found[kind]:
            report["bytes_freed"] = int(report["bytes_freed"]) + _tree_bytes(p)
            shutil.rmtree(p, ignore_errors=True)
            report["removed"].append(p.name)  # type: ignore[union-attr]
    return report


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    False where the OS or file system cannot; the caller then falls back to two renames.
    """
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(os.fspath(a)), _AT_FDCWD, os.fsencode(os.fspath(b)),
          _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def _swap_in(ready: Path, path: Path, atomic_exchange: bool = True) -> None:
    if not os.path.lexists(path):
        os.replace(ready, path)
        return
    if atomic_exchange and exchange(ready, path):
        shutil.rmtree(ready, ignore_errors=True)  # the previous folder, now under ready's name
        return
    # Two renames: a kill between them leaves `path` missing; recover_dir then moves
    # `ready` (complete) into place.
    old = ready.with_name(ready.name.replace(".ready.", ".old.", 1))
    os.replace(path, old)
    os.replace(ready, path)
    shutil.rmtree(old, ignore_errors=True)


def check_replaceable(path: str | os.PathLike, owned: Optional[Callable[[Path], bool]] = None,
                      what: str = "folder", marker: str = "") -> None:
    """Refuse to replace a regular file, a symlink or a non-empty folder ``owned`` rejects."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise OutputError(f"{path}: is a symbolic link; refusing to replace it with {_a(what)} "
                          "(give the real path or another output)")
    if not path.is_dir():
        raise OutputError(f"{path}: exists and is a file, not {_a(what)}; refusing to replace it "
                          "(delete it or choose another output)")
    try:
        empty = not any(path.iterdir())
    except OSError as exc:
        raise _output_error(path, exc, what) from None
    if not empty and not (owned is not None and owned(path)):
        has = f" (it has no {marker})" if marker else ""
        raise OutputError(f"{path}: a folder this toolkit did not write{has}; refusing to replace "
                          f"it (delete it or choose another output)")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, owned: Optional[Callable[[Path], bool]] = None,
               what: str = "folder", marker: str = "", atomic_exchange: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``path`` whole.

    Held under ``path``'s :func:`output_lock` from start to end; first finishes or undoes
    a swap a killed run left (:func:`recover_dir`), then refuses to replace a regular
    file, a symlink, or a non-empty folder that ``owned(path)`` does not recognize (with
    no ``owned``, only an empty or missing ``path`` may be replaced). On any exception
    the staging folder is removed and ``path`` is untouched, so an interrupted export
    leaves neither partial artifacts nor a stale manifest. The swap is one atomic
    exchange where the OS offers it (Linux), otherwise two renames that a later run
    completes if a kill falls between them.
    """
    path = Path(path)
    with output_lock(path, what=what):
        try:
            recover_dir(path)
        except OSError as exc:
            raise _output_error(path, exc, what) from None
        check_replaceable(path, owned, what, marker)
        try:
            staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.staging."))
        except OSError as exc:
            raise _output_error(path, exc, what) from None
        try:
            yield staging
            try:
                _publish_mode(staging, directory=True)
                ready = staging.with_name(staging.name.replace(".staging.", ".ready.", 1))
                os.replace(staging, ready)  # from here on it is known complete
                _swap_in(ready, path, atomic_exchange)
            except OSError as exc:
                raise _output_error(path, exc, what) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
