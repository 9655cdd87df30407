"""e3d-infer's stream start-up: the artifact compiles on a thread while the first video is
opened and decoded; results, errors and exit codes stay those of a foreground compile."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("e3d_export")

from e3d_runtime.cli.infer import main
from e3d_runtime.video.pipeline import VideoClassifier
from e3d_runtime.video.writers import encode_video

from .helpers import moving_bar


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from e3d_export import export
    from tiny_arch import tiny_model

    out = tmp_path_factory.mktemp("export") / "tiny"
    export(tiny_model(num_classes=3, frames=4, size=32), out, openvino=True)
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return encode_video(tmp_path_factory.mktemp("v") / "bar.mp4", moving_bar(40, 48, 64), fps=30)


def test_background_compile_gives_the_foreground_results(folder, video):
    fg = VideoClassifier.from_artifact(folder, threads=1)
    bg = VideoClassifier.from_artifact(folder, threads=1, compile_in_background=True)
    a = list(fg.stream(video, hop=0.2, return_probs=True))
    b = list(bg.stream(video, hop=0.2, return_probs=True))
    assert len(a) == len(b) > 3
    assert [w["end_time"] for w in a] == [w["end_time"] for w in b]
    np.testing.assert_allclose([w["probs"] for w in a], [w["probs"] for w in b], rtol=1e-5, atol=1e-6)
    assert bg.backend_ready and type(bg.backend) is type(fg.backend)


def test_a_broken_artifact_is_still_a_setup_error_in_stream_mode(folder, video, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "model.xml").write_text("<net>not an IR</net>")
    # the compile fails on its thread while the video decodes: one line, exit 2, no
    # per-input failure list (the video is fine)
    assert main([str(video), "--artifact", str(broken), "--mode", "stream", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "model.xml" in err and "Traceback" not in err and "input(s) failed" not in err
    assert main([str(video), "--artifact", str(folder), "--mode", "stream", "--hop", "0.2",
                 "--no-progress", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["records"]) > 3
