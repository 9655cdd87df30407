"""``e3d-zoo push``: publish a save-pretrained folder on the Hugging Face Hub.

    e3d-zoo push runs/synthetic/t8/model my-org/e3d-motion
    e3d-zoo push runs/synthetic/t8/model my-org/e3d-motion --revision v1 --private

The folder is what ``e3d-train`` writes to ``OUTPUT/model`` (or
``e3d_zoo.hub.save_pretrained``): model.safetensors, config.json, README.md. The repo
is created if missing; ``--revision`` names a branch (created if missing). The token
comes from ``--token``, ``HF_TOKEN`` or ``hf auth login``; ``HF_ENDPOINT`` picks the Hub.
"""
from __future__ import annotations

import argparse
from typing import Any

from ._common import add_json_flag, print_json


def add_push_parser(subparsers: Any) -> argparse.ArgumentParser:
    sp = subparsers.add_parser("push", help="upload a save-pretrained folder to the Hugging Face Hub",
                               description=__doc__.split("\n")[0])
    sp.add_argument("folder", help="a save-pretrained folder (model.safetensors + config.json + README.md)")
    sp.add_argument("repo_id", metavar="ORG/NAME", help="the Hub model repo (created if missing)")
    sp.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    sp.add_argument("--message", help="commit message")
    sp.add_argument("--private", action="store_true", help="create the repo as private")
    sp.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    sp.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    sp.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    add_json_flag(sp)
    sp.set_defaults(func=run_push)
    return sp


def run_push(args: argparse.Namespace) -> int:
    from ..hub import push_to_hub

    result = push_to_hub(args.folder, args.repo_id, revision=args.revision, commit_message=args.message,
                         private=True if args.private else None, token=args.token,
                         create_pr=args.create_pr, endpoint=args.endpoint)
    if args.json:
        print_json(result)
    else:
        print(f"pushed {args.folder} to {result['repo_id']}@{result['revision']} "
              f"(commit {result['commit']}); load it with "
              f"e3d_zoo.create_model('hf-hub:{result['repo_id']}', pretrained=True)")
    return 0
