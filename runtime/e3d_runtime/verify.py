"""``e3d-export --check FOLDER`` and ``--verify FOLDER`` on the box that runs the folder.

The one implementation of both commands, whichever install runs them (the edge install's
``e3d-export`` dispatches here; the full install's ``e3d_export.cli`` calls the same
functions). Neither needs torch:

* ``--check``: finish or undo a folder swap an interrupted export left (under the
  folder's lock, so a running export is never touched), then re-hash every file against
  ``manifest.json`` (a partial copy or a changed file is named).
* ``--verify``: the hashes, the reference data's sha256, then every artifact on this
  machine's runtimes against the reference clips and PyTorch logits stored in the folder,
  judged by the criteria the manifest records (:mod:`e3d_runtime.reverify`). When torch
  and e3d-zoo are installed too, the recorded source model is re-created and compared
  with the stored logits (``e3d_export.source.check_source``); otherwise that check is
  reported as skipped, with the reason.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from .atomic import output_lock, recover_dir
from .cli._common import EXIT_ERROR, POSITIVE_INT, add_json_flag, print_json, run_cli
from .errors import OutputError, OutputInUseError
from .manifest import check_manifest

if TYPE_CHECKING:
    from .reverify import SourceCheck

PROG = "e3d-export"


def add_folder_tasks(p: argparse.ArgumentParser, *, required: bool) -> None:
    """``--check`` / ``--verify FOLDER`` and their options (this module's parser and
    ``e3d_export.cli``'s, which also exports and so has ``--threads`` already)."""
    task = p.add_mutually_exclusive_group(required=required)
    task.add_argument("--check", metavar="FOLDER",
                      help="verify FOLDER's files against its manifest and exit (first finishing or "
                           "undoing a folder swap an interrupted export left)")
    task.add_argument("--verify", metavar="FOLDER",
                      help="--check, then re-run every artifact in FOLDER on this machine's runtimes "
                           "against the reference inputs/outputs stored there (no torch needed), and "
                           "against the recorded source when torch and the source are here; then exit")
    p.add_argument("--backend", action="append", default=None,
                   help="--verify: only artifacts for this runtime (repeatable; default: all)")
    p.add_argument("--no-source-check", action="store_true",
                   help="--verify: do not re-create the recorded source model")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="check or verify an e3d-export folder with this machine's runtimes "
        "(exporting needs the full install: pip install e3d-zoo)")
    add_folder_tasks(p, required=True)
    p.add_argument("--threads", type=POSITIVE_INT, help="--verify: runtime threads")
    add_json_flag(p)
    return p


def run_folder_task(args: argparse.Namespace) -> int:
    """Run the ``--check`` or ``--verify`` that :func:`add_folder_tasks` parsed."""
    if args.check:
        return check_command(args.check, as_json=args.json)
    return verify_command(args.verify, backends=args.backend, threads=args.threads,
                          source_check=not args.no_source_check, as_json=args.json)


def check_command(folder: str, *, as_json: bool = False) -> int:
    """``e3d-export --check FOLDER``: recover, re-hash, print the outcome; a mismatch raises
    ExportError."""
    m, recovery = check_folder(folder)
    if as_json:
        print_json({"folder": folder, "ok": True, "files": len(m["files"]), "recovered": recovery})
    else:
        if recovery and (recovery["finished"] or recovery["restored"]):
            how = "finished" if recovery["finished"] else "undone (previous export restored)"
            print(f"{folder}: an interrupted export's folder swap was {how}")
        print(f"{folder}: all {len(m['files'])} files match manifest.json")
    return 0


def check_folder(folder: str) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(manifest, recovery report): :func:`~e3d_runtime.atomic.recover_dir`, then
    :func:`check_manifest`, both under the folder's lock."""
    return _recovered(folder, check_manifest)


def _recovered(folder: str, then: Callable[[str], Any]) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """(then(folder), recovery report), with ``folder``'s lock held across both, so a
    running export is never recovered under its feet. Where the location is read-only no
    lock file can be made, and nothing can have been left half-swapped there either: then
    ``then`` runs without lock or recovery."""
    if not Path(folder).parent.is_dir():
        return then(folder), None
    try:
        with output_lock(folder, what="export folder"):
            try:
                recovery = recover_dir(folder)
            except OSError as exc:
                raise OutputError(f"{folder}: cannot finish an interrupted export: {exc}") from None
            return then(folder), recovery
    except OutputInUseError:
        raise
    except OutputError:
        return then(folder), None


def source_checker(skip: bool = False) -> Tuple[Optional["SourceCheck"], Optional[str]]:
    """(``e3d_export.source.check_source``, None) when torch and e3d-zoo are installed,
    else (None, why the source check will not run)."""
    if skip:
        return None, "--no-source-check"
    missing = [name for name, module in (("torch", "torch"), ("e3d-zoo", "e3d_export"))
               if not _installed(module)]
    if missing:
        return None, (f"{' and '.join(missing)} not installed here (re-creating the recorded "
                      "source model needs them)")
    from e3d_export.source import check_source

    return check_source, None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or deliberately blocked package
        return False


def verify_command(folder: str, *, backends: Optional[Sequence[str]] = None,
                   threads: Optional[int] = None, source_check: bool = True,
                   as_json: bool = False) -> int:
    """``e3d-export --verify FOLDER``: every check that can run here, one line per check;
    on any failure one error line naming each failed file and criterion, exit code 2."""
    from .reverify import failure_line, verify_folder

    _recovered(folder, lambda f: None)  # a swap an interrupted export left is finished first
    check_source, why_not = source_checker(skip=not source_check)
    report = verify_folder(folder, threads=threads, backends=backends, check_source=check_source)
    if check_source is None:
        report["checks"]["source"] = {"status": "skipped", "reason": why_not}
    if as_json:
        print_json(report)
    else:
        print(describe(report))
    if not report["ok"]:
        print(f"{PROG}: error: {failure_line(report)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def describe(report: Mapping[str, Any]) -> str:
    """The text form of a :func:`~e3d_runtime.reverify.verify_folder` report: one line per check."""
    checks: Dict[str, Any] = report["checks"]
    files, ref = checks["files"], checks["reference"]
    lines = [f"{report['folder']}: files {files['status']}"
             + (f" ({'; '.join(files['problems'])})" if files["problems"] else " (match manifest.json)")
             + f"; reference {ref['file']}: {ref['clips']} clips " + "x".join(str(d) for d in ref["clip_shape"])]
    for r in checks["artifacts"]:
        what = r.get("summary") or r.get("reason") or "; ".join(r.get("failed", []))
        lines.append(f"  {r['status']:8s} {str(r['file']):22s} {str(r.get('backend')):12s} "
                     f"{str(r.get('precision')):13s} {what}")
    src = checks.get("source")
    if src:
        lines.append(f"  source   {src['status']}: {src.get('how') or src.get('reason')}"
                     + (f" ({src['summary']})" if src.get("summary") else ""))
    return "\n".join(lines)


def _main(argv: Optional[Sequence[str]]) -> int:
    return run_folder_task(build_parser().parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv, prog=PROG)
