"""The console scripts of e3d-zoo, started without torch.

``import e3d_zoo`` registers the zoo in timm, which imports torch and timm: seconds before
a command can even print its ``--help``. These entry points import the package with its
public names deferred (each loads on first use, and the zoo registers in timm as soon as a
command touches a model), then run the command. Commands import what they need inside
the functions that need it, so ``--help`` and usage errors stay torch-free.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Optional, Sequence

DEFER_ZOO_IMPORTS = False


def _command(module: str) -> Callable[[Optional[Sequence[str]]], int]:
    global DEFER_ZOO_IMPORTS
    DEFER_ZOO_IMPORTS = True
    try:
        return importlib.import_module(module).main
    finally:
        DEFER_ZOO_IMPORTS = False


def zoo(argv: Optional[Sequence[str]] = None) -> int:
    return _command("e3d_zoo.cli.zoo")(argv)


def search(argv: Optional[Sequence[str]] = None) -> int:
    return _command("e3d_zoo.cli.search")(argv)


def bench(argv: Optional[Sequence[str]] = None) -> int:
    return _command("e3d_zoo.cli.bench")(argv)


def train(argv: Optional[Sequence[str]] = None) -> int:
    return _command("e3d_zoo.cli.train")(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(zoo())
