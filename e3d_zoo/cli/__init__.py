"""Command-line entry points: one small module per command.

``e3d-infer`` and the shared CLI helpers live in ``e3d_runtime.cli`` (the edge
install has them without torch); their old paths here are the same modules.
"""
from .._moved import alias_modules

alias_modules(__name__, {"_common": "e3d_runtime.cli._common", "infer": "e3d_runtime.cli.infer"})
