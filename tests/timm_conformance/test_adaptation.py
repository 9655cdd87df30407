"""The adaptation of timm's tests fails loudly, never silently: a missing anchor, a failed
download."""
from __future__ import annotations

import pytest

from adapt_timm_tests import REWRITES, AdaptationError, adapt
from test_timm_models import _timm_sdist


def test_every_rewrite_needs_its_anchor():
    # a text with every anchor once, then without the clip-input anchor
    text = ("from timm.models import get_notrace_modules, get_notrace_functions\n"
            "x = torch.randn((batch_size, *input_size))\ny = torch.randn((2, *input_size))\n"
            "s = get_spatial_dim(output_fmt)\nassert len(outputs.shape) == 4\nif features.ndim == 4: pass\n"
            "NON_STD_FILTERS = [\n]\n")
    adapted, counts = adapt(text)
    assert set(counts) == {what for what, *_ in REWRITES} and all(n == 1 for n in counts.values())
    assert "torch.randn(_clip(batch_size, input_size))" in adapted and "import e3d_zoo" in adapted
    assert "FEAT_INTER_FILTERS.append('zoo')" in adapted and "(-2, -1)" in adapted
    with pytest.raises(AdaptationError, match="no longer has the text for 'clip inputs \\(batch_size\\)'"):
        adapt(text.replace("torch.randn((batch_size, *input_size))", "torch.rand(batch_size)"))
    # an optional anchor may be absent (a timm release without that test)
    assert adapt(text.replace("torch.randn((2, *input_size))", ""))[1]["clip inputs (2)"] == 0


def test_a_failed_download_fails_the_test_instead_of_skipping(monkeypatch, tmp_path):
    monkeypatch.setenv("E3D_ZOO_TEST_CACHE", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"could not download timm 0\.0\.0's sdist"):
        _timm_sdist("0.0.0")
    assert not list(tmp_path.rglob("*.tar.gz"))
