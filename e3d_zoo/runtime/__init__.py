"""Runtime backends behind one interface.

The backends that run exported artifacts live in the torch-free ``e3d_runtime``
package (``e3d_runtime.backends``); this package adds the PyTorch reference backend
(:mod:`.torch_backend`) and keeps the old module paths importable.
"""
from .._moved import alias_modules

alias_modules(__name__, {name: f"e3d_runtime.backends.{name}" for name in
                         ("base", "onnxruntime_backend", "openvino_backend", "tensorrt_backend")})

from e3d_runtime.backends.base import (Backend, TimingStats, available_backends,  # noqa: E402
                                       backend_class, canonical_backend_name, load_backend,
                                       register_backend)

__all__ = ["Backend", "TimingStats", "available_backends", "backend_class",
           "canonical_backend_name", "load_backend", "register_backend"]
