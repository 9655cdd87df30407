"""Video decoding, sampling, preprocessing and the inference pipeline.

They live in the torch-free ``e3d_runtime.video`` package (training and the edge
install share one implementation); ``e3d_zoo.video.<module>`` is the same module.
"""
from __future__ import annotations

from .._moved import alias_modules

alias_modules(__name__, {name: f"e3d_runtime.video.{name}" for name in
                         ("sampling", "transforms", "decode", "writers", "pipeline")})

from e3d_runtime.video import *  # noqa: E402,F401,F403
from e3d_runtime.video import __all__, __getattr__  # noqa: E402,F401
