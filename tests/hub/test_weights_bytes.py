"""Weights files: the same bytes for the same weights, usual permissions, NaN refused."""
from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from e3d_runtime.errors import HubError, WeightsError
from e3d_zoo import create_model
from e3d_zoo.hub import load_weights, parse_hub_id, safetensors_bytes, save_pretrained

from testkit import current_umask, sha256_of
from tiny_arch import make_tiny_spec

_SAVE = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    from tiny_arch import make_tiny_spec
    from e3d_zoo import create_model
    from e3d_zoo.hub import save_pretrained
    torch.manual_seed(0)
    save_pretrained(create_model(make_tiny_spec(), num_classes=5), sys.argv[1], label_names=list("abcde"))
""")


def test_save_pretrained_gives_the_same_bytes_in_every_process(tmp_path):
    # safetensors keeps __metadata__ in a Rust HashMap whose order changes per process;
    # four processes would all agree by chance one time in eight without the fix.
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = [tmp_path / f"run{i}" for i in range(4)]
    for out in outs:
        subprocess.run([sys.executable, "-c", _SAVE, str(out), tests_dir], check=True, timeout=300)
    digests = {sha256_of(out / "model.safetensors") for out in outs}
    assert len(digests) == 1
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE((outs[0] / name).stat().st_mode) == 0o666 & ~current_umask(), name
    assert stat.S_IMODE(outs[0].stat().st_mode) == 0o777 & ~current_umask()


def test_canonical_bytes_are_a_valid_safetensors_file(tmp_path):
    from safetensors import safe_open

    state = {"b": torch.arange(3.0), "a": torch.ones(2, 2, dtype=torch.float16)}
    data = safetensors_bytes(state, {"library": "e3d-zoo", "format": "pt"})
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"format": "pt", "library": "e3d-zoo"}
        assert torch.equal(f.get_tensor("b"), state["b"]) and torch.equal(f.get_tensor("a"), state["a"])
    assert int.from_bytes(data[:8], "little") % 8 == 0  # header stays 8-byte aligned
    assert data == safetensors_bytes(dict(reversed(list(state.items()))),
                                     {"format": "pt", "library": "e3d-zoo"})


def test_non_finite_weights_are_refused_at_load(tmp_path):
    torch.manual_seed(0)
    model = create_model(make_tiny_spec(), num_classes=5).eval()
    with torch.no_grad():
        model.classifier.bias[2] = math.inf
    save_pretrained(model, tmp_path / "bad")
    target = create_model(make_tiny_spec(), num_classes=5)
    with pytest.raises(WeightsError, match=r"non-finite weights \(NaN or Inf\) in \['classifier.bias'\]"):
        load_weights(target, tmp_path / "bad")
    torch.save({"state_dict": {k: torch.full_like(v, math.nan) if v.is_floating_point() else v
                               for k, v in model.state_dict().items()}}, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"nan.pth: non-finite weights .*\(\+\d+ more\)"):
        load_weights(target, tmp_path / "nan.pth")


@pytest.mark.parametrize("repo", ["hf-hub:../..", "hf-hub:org/..", "a--b/name", "org/name."])
def test_invalid_hub_ids_are_refused_before_any_request(repo):
    with pytest.raises(HubError, match="not a valid Hub repo id|expected a Hub id"):
        parse_hub_id(repo)
