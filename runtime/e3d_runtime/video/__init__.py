"""Video decoding, sampling, preprocessing and the inference pipeline.

``sampling`` and ``transforms`` are light and are shared with
training; ``decode``, ``writers`` and ``pipeline`` import PyAV lazily.
"""
from __future__ import annotations

from .sampling import SamplingConfig
from .transforms import EvalTransform, MultiCropTransform, TrainTransform


def __getattr__(name: str):  # keep PyAV / the runtimes out of `import e3d_zoo.video`
    if name in ("VideoClassifier", "load_labels"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("VideoReader", "StreamReader", "open_video"):
        from . import decode

        return getattr(decode, name)
    if name == "encode_video":
        from .writers import encode_video

        return encode_video
    raise AttributeError(name)


__all__ = ["SamplingConfig", "EvalTransform", "MultiCropTransform", "TrainTransform",
           "VideoClassifier", "VideoReader", "StreamReader", "open_video", "encode_video",
           "load_labels"]
