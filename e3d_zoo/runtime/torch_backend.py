"""PyTorch eager backend: the reference every other backend is verified against."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch

from e3d_runtime.backends.base import Backend, register_backend


@register_backend("torch")
class TorchBackend(Backend):
    artifact_kinds = ("module", "model name", "arch json")

    def __init__(self, artifact: Any, *, threads: Optional[int] = None, device: str = "cpu",
                 **options: Any):
        super().__init__(artifact, threads=threads, **options)
        if isinstance(artifact, torch.nn.Module):
            model = artifact
        else:
            from ..zoo import create_model

            model = create_model(artifact, **options)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if threads:
            torch.set_num_threads(threads)

    def run(self, clips: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "runtime_version": torch.__version__,
                "device": str(self.device), "threads": self.threads or torch.get_num_threads()}
