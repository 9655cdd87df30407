"""One exception hierarchy for the whole toolkit (e3d-zoo and the edge install e3d-runtime).

Every error a user can cause derives from :class:`E3DError`; the CLIs catch it,
print its message and exit non-zero without a traceback.
"""
from __future__ import annotations


class E3DError(Exception):
    """Base class of every error this package raises on bad input or environment."""


class ArchError(E3DError, ValueError):
    """An architecture file or spec is malformed or inconsistent."""


class ModelNotFoundError(E3DError, KeyError):
    """A model name is not registered and is not a path to an arch file."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class WeightsError(E3DError):
    """Weights cannot be had, are corrupt, or do not fit the architecture."""


class HubError(WeightsError):
    """A Hugging Face Hub operation failed (repo missing, offline, upload refused)."""


class SearchError(E3DError, ValueError):
    """A search was asked for something impossible (budgets, space, score name)."""


class LatencyTableError(E3DError, ValueError):
    """A latency table is corrupt or does not fit the device or search space."""


class ExportError(E3DError):
    """An export step failed."""


class VerificationError(ExportError):
    """An exported artifact disagrees with PyTorch beyond the tolerance."""


class BackendError(E3DError):
    """A runtime backend cannot load or run an artifact on this machine."""


# packages the torch-free edge install (e3d-runtime) runs with -> its extra
_RUNTIME_EXTRAS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "av": "video",
                   "PIL": "video", "tqdm": "video", "tensorrt": "trt"}


def install_hint(package: str, extra: str) -> str:
    """``pip install '...'`` for ``package``: the edge install's extra when e3d-zoo (torch)
    is not installed and the runtime has that extra, else e3d-zoo's ``extra``."""
    import importlib.util

    if package in _RUNTIME_EXTRAS and importlib.util.find_spec("e3d_zoo") is None:
        return f"pip install 'e3d-runtime[{_RUNTIME_EXTRAS[package]}]'"
    return f"pip install 'e3d-zoo[{extra}]'"


class MissingDependencyError(E3DError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str, purpose: str = ""):
        self.package = package
        self.extra = extra
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"the optional dependency '{package}' is not installed{what}; "
                         f"install it with: {install_hint(package, extra)}")


class VideoError(E3DError):
    """A video file or stream cannot be opened or decoded."""


class DataError(E3DError):
    """A dataset, list file or label map is malformed."""


class ConfigError(E3DError, ValueError):
    """A config file or command-line option is invalid."""


class OutputError(E3DError, OSError):
    """An output path cannot be written, or writing it would destroy something else
    (a regular file where a folder goes, a folder this toolkit did not write)."""


class OutputInUseError(OutputError):
    """Another process holds the output's lock (two runs writing one output)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


def require(package: str, extra: str, purpose: str = ""):
    """Import an optional dependency or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise MissingDependencyError(package, extra, purpose) from exc
