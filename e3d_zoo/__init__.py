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
from .spec import ArchSpec, BlockSpec, load_arch
from .complexity import macs, num_layers, params, tinynas_flops
from .stentr import entropy_score, stage_scores, stentr_score
from .model import E3D
from .zoo import arch_path, create_model, list_models, spec_for

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
