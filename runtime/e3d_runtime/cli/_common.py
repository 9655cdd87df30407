"""What every CLI shares: turning E3DError into a message and an exit code, --json output,
and argument types that check ranges (so a bad number is refused, never defaulted)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable, List, Optional, Sequence

from ..errors import E3DError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _say(line: str) -> None:
    """One line on stderr, whatever it holds: paths can carry undecodable bytes
    (surrogate escapes) that a strict UTF-8 stderr would refuse with a traceback."""
    text = " ".join(str(line).split("\n")) + "\n"
    enc = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr.write(text.encode(enc, "backslashreplace").decode(enc, "replace"))
    sys.stderr.flush()


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None,
            prog: str = "e3d") -> int:
    """Call ``main``; an E3DError becomes ``prog: error: message`` and exit code 2.

    An OSError that no layer below turned into an E3DError (a full disk, a file that
    vanished mid-run) is reported the same way, naming its file, rather than as a
    traceback; a MemoryError likewise.
    """
    try:
        return int(main(argv) or 0)
    except E3DError as exc:
        _say(f"{prog}: error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"{prog}: error: {where}{exc.strerror or exc}")
        return EXIT_ERROR
    except MemoryError:
        _say(f"{prog}: error: out of memory (input too large for this machine?)")
        return EXIT_ERROR


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document to stdout (for scripts) instead of text")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


# ---- argument types: argparse reports "argument --flag: <message>" and exits 2 -------------

def int_in(lo: Optional[int] = None, hi: Optional[int] = None) -> Callable[[str], int]:
    """An integer within [lo, hi] (either end open when None)."""
    expected = _range_text("an integer", lo, hi)

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {v}")
        return v
    parse.__name__ = "integer"
    return parse


def float_in(lo: Optional[float] = None, hi: Optional[float] = None, *, lo_open: bool = False,
             hi_open: bool = False) -> Callable[[str], float]:
    """A finite number within [lo, hi] ((lo, hi) ends with ``lo_open``/``hi_open``)."""
    expected = _range_text("a finite number", lo, hi, lo_open, hi_open)

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
        if not math.isfinite(v) or not _within(v, lo, hi, lo_open, hi_open):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text}")
        return v
    parse.__name__ = "number"
    return parse


def float_list(n_min: int = 1) -> Callable[[str], List[float]]:
    """Comma-separated finite numbers, e.g. ``0,0,0,0,1``."""
    def parse(text: str) -> List[float]:
        try:
            vals = [float(w) for w in text.replace(" ", "").split(",") if w != ""]
        except ValueError:
            vals = None
        if vals is None or len(vals) < n_min or not all(math.isfinite(v) for v in vals):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated finite numbers like 0,0,0,0,1, found {text!r}")
        return vals
    parse.__name__ = "numbers"
    return parse


def _within(v: float, lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    return not (hi is not None and (v > hi or (hi_open and v == hi)))


def _range_text(kind: str, lo: Any, hi: Any, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '<='} {hi:g}"
    return kind


POSITIVE_INT = int_in(1)
NON_NEGATIVE_INT = int_in(0)
