"""Old import paths of the modules that moved to the torch-free ``e3d_runtime`` package.

``e3d_zoo.errors``, ``e3d_zoo.atomic``, ``e3d_zoo.runtime.openvino_backend``,
``e3d_zoo.video.pipeline``, ... are the very same module objects as their
``e3d_runtime`` counterparts (entries in ``sys.modules``, not copies), so there is
one exception hierarchy, one backend registry and one preprocessing implementation
whichever path a caller imports. No file is left at the old paths: the modules are
moved, not duplicated.
"""
from __future__ import annotations

import importlib
import sys
from typing import Mapping


def alias_modules(package: str, moved: Mapping[str, str]) -> None:
    """Make ``package.<old>`` import as the module ``moved[old]``."""
    parent = sys.modules[package]
    for old, new in moved.items():
        module = importlib.import_module(new)
        sys.modules.setdefault(f"{package}.{old}", module)
        setattr(parent, old, module)
