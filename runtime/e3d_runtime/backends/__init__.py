"""Runtime backends behind one interface (see :mod:`e3d_runtime.backends.base`)."""
from .base import (Backend, TimingStats, available_backends, backend_class, canonical_backend_name,
                   load_backend, register_backend, time_interleaved)

__all__ = ["Backend", "TimingStats", "available_backends", "backend_class",
           "canonical_backend_name", "load_backend", "register_backend", "time_interleaved"]
