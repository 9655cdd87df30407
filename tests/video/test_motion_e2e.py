"""Labels end to end on the training issue's synthetic motion videos (real encoded files).

The classifier here is a *reference motion classifier*, not a learned model: a
global brightness-constancy flow estimate (vx, vy) turned into logits for
move_left / move_right / move_up / move_down. It makes every label checkable in
seconds, exactly, and fails if the pipeline reverses, shuffles, flips or mis-rotates
frames anywhere between the file and the backend. A trained E3D on the same videos:
test_trained_e2e.py.
"""
from __future__ import annotations

import pytest
import torch

from e3d_zoo.runtime.base import load_backend
from e3d_zoo.video.pipeline import VideoClassifier
from e3d_zoo.video.writers import encode_video

synthetic = pytest.importorskip("e3d_zoo.data.synthetic")
DIRECTIONS = list(synthetic.CLASSES[:4])  # move_left, move_right, move_up, move_down


class ReferenceFlowDirection(torch.nn.Module):
    """(N, C, T, H, W) -> logits over DIRECTIONS from the mean optical flow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(1)
        it = g[:, 1:] - g[:, :-1]
        gm = 0.5 * (g[:, 1:] + g[:, :-1])
        ix, iy = torch.zeros_like(gm), torch.zeros_like(gm)
        ix[..., 1:-1] = 0.5 * (gm[..., 2:] - gm[..., :-2])
        iy[..., 1:-1, :] = 0.5 * (gm[..., 2:, :] - gm[..., :-2, :])
        vx = -(it * ix).sum((1, 2, 3)) / (ix * ix).sum((1, 2, 3)).clamp_min(1e-6)
        vy = -(it * iy).sum((1, 2, 3)) / (iy * iy).sum((1, 2, 3)).clamp_min(1e-6)
        return 20 * torch.stack([-vx, vx, -vy, vy], 1)


CFG = {"num_frames": 8, "frame_stride": 1, "input_size": (3, 48, 48),
       "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 1.0}


@pytest.fixture(scope="module")
def motion_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    config = synthetic.MotionConfig(frames=16, size=48)
    written = synthetic.write_videos(root, clips_per_class=3, seed=0, split="test", config=config)
    return [(p, label) for p, label in written if label < len(DIRECTIONS)]


@pytest.fixture(scope="module")
def classifier():
    backend = load_backend("torch", ReferenceFlowDirection(), threads=1)
    return VideoClassifier(backend, CFG, labels=DIRECTIONS, num_clips=2, num_crops=3, top_k=1)


def test_whole_video_mode_labels_every_motion_clip_correctly(classifier, motion_videos):
    assert len(motion_videos) == 12
    got = [classifier.classify(p)["top"][0]["label"] for p, _ in motion_videos]
    assert got == [DIRECTIONS[label] for _, label in motion_videos]


def test_stream_mode_labels_most_windows_correctly(classifier, motion_videos):
    # a single window sees half the clip; where the shape is half out of frame the
    # reference flow estimate itself is unreliable, so judge the windows in aggregate
    right = total = 0
    for path, label in motion_videos:
        wins = list(classifier.stream(path, hop=0.25))
        assert len(wins) == 5  # 16 frames, window 8, hop 2 frames at 8 fps
        right += sum(w["top"][0]["label"] == DIRECTIONS[label] for w in wins)
        total += len(wins)
    assert right / total >= 0.85, f"{right}/{total} windows correct"


def test_rotation_metadata_is_applied_before_the_model(classifier, tmp_path):
    ds = synthetic.SyntheticMotion("test", 8, seed=1, frames=16, size=48)
    right = next(i for i in range(8) if ds.label(i) == DIRECTIONS.index("move_right"))
    frames = ds.frames(right)
    plain = encode_video(tmp_path / "right.mp4", frames, fps=8, options={"crf": "10"})
    # shown rotated 90 deg counter-clockwise, rightward motion points up the screen
    rotated = encode_video(tmp_path / "right_rot90.mp4", frames, fps=8, rotation=90,
                           options={"crf": "10"})
    assert classifier.classify(plain)["top"][0]["label"] == "move_right"
    assert classifier.classify(rotated)["top"][0]["label"] == "move_up"
