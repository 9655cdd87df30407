"""``e3d-export --check FOLDER`` and ``--verify FOLDER`` on the box that runs the folder.

Neither needs torch, so both work in the edge install (``e3d-runtime``):

* ``--check``: re-hash every file against ``manifest.json`` (a partial copy or a changed
  file is named).
* ``--verify``: ``--check``, then re-run the folder's numerical verification with this
  machine's runtimes: the reference inputs and PyTorch outputs stored in the folder at
  export time go through each artifact an installed runtime can run, and the outputs
  must agree within the tolerances the manifest records.

The verification core (reference data in the folder, comparison per artifact) comes
with the deployment-trust work (issue 13) and is merged here by the lead; until then
``--verify`` checks the folder, lists what it would run, and stops with a clear error.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .cli._common import add_json_flag, print_json, run_cli
from .errors import ConfigError, VerificationError
from .manifest import FORMAT_BACKENDS, check_manifest

PROG = "e3d-export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="check or verify an e3d-export folder with this machine's runtimes "
        "(exporting needs the full install: pip install e3d-zoo)")
    task = p.add_mutually_exclusive_group(required=True)
    task.add_argument("--check", metavar="FOLDER", help="verify FOLDER's files against its manifest")
    task.add_argument("--verify", metavar="FOLDER",
                      help="--check, then re-run the folder's numerical verification on this "
                           "machine's runtimes (no torch needed)")
    p.add_argument("--backend", action="append", default=None,
                   help="--verify: only this runtime (repeatable; default: every installed one)")
    p.add_argument("--threads", type=int, help="--verify: runtime threads")
    add_json_flag(p)
    return p


def runnable_artifacts(folder: str | Path, manifest: Dict[str, Any],
                       backends: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """The folder's artifacts that ``backends`` (default: every installed runtime) can run:
    ``{"name", "backend", "file", "precision"}`` each, in manifest order."""
    from .backends.base import canonical_backend_name
    from .video.pipeline import installed_runtimes

    wanted = [canonical_backend_name(b) for b in backends] if backends else installed_runtimes()
    out = []
    for name, entry in (manifest.get("artifacts") or {}).items():
        backend = FORMAT_BACKENDS.get(str(entry.get("format")))
        if backend in wanted:
            out.append({"name": name, "backend": backend, "file": str(Path(folder) / entry["file"]),
                        "precision": entry.get("precision")})
    return out


def verify_folder(folder: str | Path, *, backends: Optional[Sequence[str]] = None,
                  threads: Optional[int] = None) -> Dict[str, Any]:
    """Check ``folder`` and re-run its verification here; raises VerificationError on a
    disagreement. Returns ``{"folder", "files", "results"}``."""
    manifest = check_manifest(folder)
    todo = runnable_artifacts(folder, manifest, backends)
    if not todo:
        raise ConfigError(f"{folder}: none of its artifacts runs on this machine's runtimes "
                          f"({', '.join(backends or []) or 'none installed'})")
    raise VerificationError(
        f"{folder}: --verify: the verification core is not merged into e3d-runtime yet (it would "
        f"run {', '.join(a['name'] + ' on ' + a['backend'] for a in todo)}); "
        f"--check {folder} re-hashes the folder")


def check_command(folder: str, *, as_json: bool = False) -> int:
    """``e3d-export --check FOLDER``: re-hash, print the outcome; a mismatch raises ExportError."""
    m = check_manifest(folder)
    if as_json:
        print_json({"folder": folder, "ok": True, "files": len(m["files"])})
    else:
        print(f"{folder}: all {len(m['files'])} files match manifest.json")
    return 0


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    if args.check:
        return check_command(args.check, as_json=args.json)
    report = verify_folder(args.verify, backends=args.backend, threads=args.threads)
    if args.json:
        print_json(report)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog=PROG)
