"""``e3d-export`` on any install: exporting needs the full e3d-zoo (torch); checking and
verifying a folder runs in the edge install.

    e3d-export --check exports/e3d_s         # re-hash against manifest.json (edge install)
    e3d-export --verify exports/e3d_s        # + re-run the numerical verification here
    e3d-export e3d_s --openvino --out exports/e3d_s            # workstation: needs e3d-zoo

The console script belongs to e3d-runtime so that an edge box has it; the export
itself is imported (``e3d_export.cli``) only when asked for.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Optional, Sequence

from ..errors import ConfigError
from ._common import run_cli

EDGE_TASKS = ("--check", "--verify")


def _is_edge_task(argv: Sequence[str]) -> bool:
    return any(a in EDGE_TASKS or a.startswith(tuple(t + "=" for t in EDGE_TASKS)) for a in argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if _is_edge_task(args):
        from ..verify import main as verify_main

        return verify_main(args)
    if importlib.util.find_spec("e3d_export") is None:
        if not args or args[0] in ("-h", "--help"):
            from ..verify import build_parser

            build_parser().print_help()
            return 0

        def refuse(_argv: Optional[Sequence[str]]) -> int:
            raise ConfigError("exporting needs the full install with PyTorch (pip install e3d-zoo); "
                              "this edge install checks and verifies folders: e3d-export --check "
                              "FOLDER, e3d-export --verify FOLDER")

        return run_cli(refuse, args, prog="e3d-export")
    from e3d_export.cli import main as export_main

    return export_main(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
