"""Command-line entry points of the edge install: ``e3d-infer`` and ``e3d-export``."""
