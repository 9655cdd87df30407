"""e3d-runtime: run exported E3D artifacts on video without PyTorch.

The edge side of e3d-zoo: runtime backends (ONNX Runtime, OpenVINO, TensorRT),
PyAV decoding, clip sampling, the numpy preprocessing that training uses too, the
multi-view and streaming pipelines, writers, export-folder manifests and the
``e3d-infer`` command. It needs numpy and one runtime; nothing here imports torch.

    from e3d_runtime import VideoClassifier
    clf = VideoClassifier.from_artifact("exports/e3d_s")        # an e3d-export folder
    for window in clf.stream("rtsp://camera/live", hop=0.5):
        print(window["end_time"], window["top"][0]["label"])
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (BackendError, ConfigError, DataError, E3DError, ExportError,
                     MissingDependencyError, OutputError, OutputInUseError, VerificationError,
                     VideoError)


def __getattr__(name: str):  # the pipeline pulls in the video stack: only on use
    if name == "VideoClassifier":
        from .video.pipeline import VideoClassifier

        return VideoClassifier
    if name == "load_backend":
        from .backends.base import load_backend

        return load_backend
    raise AttributeError(f"module 'e3d_runtime' has no attribute {name!r}")


__all__ = ["__version__", "VideoClassifier", "load_backend", "E3DError", "BackendError",
           "ConfigError", "DataError", "ExportError", "MissingDependencyError", "OutputError",
           "OutputInUseError", "VerificationError", "VideoError"]
