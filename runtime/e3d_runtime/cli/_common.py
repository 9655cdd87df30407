"""What every CLI shares: turning E3DError into a message and an exit code, --json output."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Optional, Sequence

from ..errors import E3DError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None,
            prog: str = "e3d") -> int:
    """Call ``main``; an E3DError becomes ``prog: error: message`` and exit code 2."""
    try:
        return int(main(argv) or 0)
    except E3DError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into `head`
        return 0


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with code 2 and a one-line message (it already does), kept for symmetry."""
