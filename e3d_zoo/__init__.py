"""e3d-zoo: the E3D model zoo and deployment toolkit.

    import e3d_zoo
    model = e3d_zoo.create_model("e3d_s", num_classes=400)

Importing the package registers the zoo in timm, so ``timm.create_model("e3d_s")``
works too. Heavy optional runtimes (onnxruntime, openvino, tensorrt, av) are only
imported by the modules that need them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._moved import alias_modules

alias_modules(__name__, {"errors": "e3d_runtime.errors", "atomic": "e3d_runtime.atomic"})

from .errors import (ArchError, BackendError, ConfigError, DataError, E3DError, ExportError,
                     HubError, LatencyTableError, MissingDependencyError, ModelNotFoundError,
                     OutputError, OutputInUseError, SearchError, VerificationError, VideoError,
                     WeightsError)
import importlib as _importlib
import sys as _sys

# Public names and the module that defines each. They load on first use (PEP 562), so a
# console script can parse its arguments before torch is imported; a plain `import e3d_zoo`
# still loads them all at once below, because that import is what registers the zoo in timm.
_LAZY = {
    "ArchSpec": ".spec", "BlockSpec": ".spec", "load_arch": ".spec",
    "macs": ".complexity", "num_layers": ".complexity", "params": ".complexity",
    "tinynas_flops": ".complexity",
    "entropy_score": ".stentr", "stage_scores": ".stentr", "stentr_score": ".stentr",
    "E3D": ".model",
    "arch_path": ".zoo", "create_model": ".zoo", "list_models": ".zoo", "spec_for": ".zoo",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def _deferred() -> bool:
    """True while e3d_zoo_cli (the console scripts' launcher) imports the package."""
    return bool(getattr(_sys.modules.get("e3d_zoo_cli"), "DEFER_ZOO_IMPORTS", False))


if not _deferred():
    for _name in _LAZY:
        __getattr__(_name)
    del _name

__all__ = [
    "__version__",
    "ArchSpec", "BlockSpec", "load_arch", "arch_path", "spec_for",
    "E3D", "create_model", "list_models",
    "params", "macs", "tinynas_flops", "num_layers",
    "stentr_score", "stage_scores", "entropy_score",
    "E3DError", "ArchError", "ModelNotFoundError", "WeightsError", "HubError", "SearchError",
    "LatencyTableError", "ExportError", "VerificationError", "BackendError",
    "MissingDependencyError", "VideoError", "DataError", "ConfigError", "OutputError",
    "OutputInUseError",
]
