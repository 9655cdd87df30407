"""Searched architectures shipped with e3d-zoo (one JSON file per model)."""
