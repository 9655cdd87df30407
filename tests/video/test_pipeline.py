"""Both inference modes on real encoded videos, on every backend that runs here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e3d_zoo import create_model
from e3d_zoo.errors import ConfigError
from e3d_zoo.runtime.base import Backend
from e3d_zoo.video.decode import VideoReader
from e3d_zoo.video.pipeline import VideoClassifier, load_labels, softmax
from e3d_runtime.video.prefetch import prefetch
from e3d_zoo.video.sampling import multi_view_indices
from e3d_zoo.video.transforms import EvalTransform, MultiCropTransform
from e3d_zoo.video.writers import encode_video

from .helpers import make_tiny_spec, moving_bar, numbered_frames

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model(make_tiny_spec(frames=4, size=32), num_classes=NUM_CLASSES).eval()
    # non-trivial head so that views really differ in their scores
    with torch.no_grad():
        m.classifier.weight.normal_(0, 2.0)
    return m


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "bar": encode_video(d / "bar.mp4", moving_bar(60, 48, 80), fps=30),
        "short": encode_video(d / "short.mp4", moving_bar(3, 40, 40), fps=30),
        "numbered": encode_video(d / "numbered.mp4", numbered_frames(60, 36, 36), fps=30),
    }


def _direct(model, clips):
    with torch.no_grad():
        return softmax(model(torch.as_tensor(clips)).numpy())


def test_multi_view_classification_equals_the_protocol_computed_by_hand(model, videos):
    clf = VideoClassifier.from_model(model, threads=1, num_clips=3, num_crops=3, top_k=3)
    rec = clf.classify(videos["bar"], return_probs=True)
    assert rec["kind"] == "video" and rec["num_views"] == 9 and rec["num_frames"] == 60
    # by hand: 3 evenly spread clips (stride 2 from the config) x 3 crops, softmax, mean
    cfg = model.pretrained_cfg
    idx = multi_view_indices(60, clf.sampling, 3)
    with VideoReader(videos["bar"]) as r:
        frames, _ = r.read()
    crops = MultiCropTransform.from_cfg(cfg, num_crops=3)
    views = np.concatenate([crops(frames[i]) for i in idx])
    expected = _direct(model, views).mean(0)
    assert np.allclose(rec["probs"], expected, atol=1e-5)
    assert rec["top"][0]["index"] == int(np.argmax(expected))
    assert [t["score"] for t in rec["top"]] == sorted((t["score"] for t in rec["top"]), reverse=True)
    assert set(rec["timing"]) == {"decode_s", "preprocess_s", "infer_s"}


def test_single_view_uses_the_eval_transform(model, videos):
    clf = VideoClassifier.from_model(model, threads=1)
    rec = clf.classify(videos["bar"], num_clips=1, num_crops=1, return_probs=True)
    with VideoReader(videos["bar"]) as r:
        frames, _ = r.read(multi_view_indices(60, clf.sampling, 1)[0])
    expected = _direct(model, EvalTransform.from_cfg(model.pretrained_cfg)(frames)[None])[0]
    assert rec["num_views"] == 1 and np.allclose(rec["probs"], expected, atol=1e-5)


def test_stream_windows_follow_hop_and_equal_direct_inference(model, videos):
    clf = VideoClassifier.from_model(model, threads=1, batch_size=3)
    timing = {}
    wins = list(clf.stream(videos["numbered"], hop=0.5, return_probs=True, timing=timing))
    # stride 2 at 30 fps -> 15 sampled frames/s; hop 0.5 s -> every 8 sampled frames
    # (7.5 rounded); 30 sampled frames, a window of 4: windows end at 3, 11, 19, 27
    assert [w["window"] for w in wins] == [0, 1, 2, 3]
    assert [round(w["start_time"], 3) for w in wins] == [0.0, 0.533, 1.067, 1.6]
    assert all(w["end_time"] > w["start_time"] for w in wins)
    with VideoReader(videos["numbered"]) as r:
        frames, _ = r.read()
    tf = EvalTransform.from_cfg(model.pretrained_cfg)
    for w in wins:
        first = int(round(w["start_time"] * 30))
        expected = _direct(model, tf(frames[first:first + 8:2])[None])[0]
        assert np.allclose(w["probs"], expected, atol=1e-5)
    assert timing["decode_s"] > 0 and timing["preprocess_s"] > 0 and timing["infer_s"] > 0


def test_stream_smoothing_is_an_exponential_moving_average(model, videos):
    clf = VideoClassifier.from_model(model, threads=1)
    raw = [np.array(w["probs"]) for w in clf.stream(videos["bar"], hop=0.25, return_probs=True)]
    smooth = [np.array(w["probs"]) for w in clf.stream(videos["bar"], hop=0.25, smoothing=0.6,
                                                        return_probs=True)]
    assert len(raw) == len(smooth) >= 3
    ema = raw[0]
    for r, s in zip(raw, smooth):
        ema = ema if r is raw[0] else 0.6 * ema + 0.4 * r
        assert np.allclose(s, ema, atol=1e-6)


def test_video_shorter_than_a_clip_is_looped_in_both_modes(model, videos):
    clf = VideoClassifier.from_model(model, threads=1)
    rec = clf.classify(videos["short"], num_clips=2, num_crops=1)
    assert rec["num_frames"] == 3 and rec["num_views"] == 2
    wins = list(clf.stream(videos["short"], hop=0.5, return_probs=True))
    assert len(wins) == 1  # 2 sampled frames (0, 2), looped to 4: 0 2 0 2
    with VideoReader(videos["short"]) as r:
        frames, _ = r.read([0, 2, 0, 2])
    expected = _direct(model, EvalTransform.from_cfg(model.pretrained_cfg)(frames)[None])[0]
    assert np.allclose(wins[0]["probs"], expected, atol=1e-5)


def test_many_videos_keep_going_past_a_bad_one(model, videos, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 2048)
    clf = VideoClassifier.from_model(model, threads=1)
    recs = list(clf.classify_many([videos["bar"], bad, videos["short"]], num_clips=1, num_crops=1))
    assert [r["kind"] for r in recs] == ["video", "error", "video"]
    assert "bad.mp4" in recs[1]["error"]


def test_labels_come_from_a_file(model, videos, tmp_path):
    (tmp_path / "labels.txt").write_text("\n".join(f"action {i}" for i in range(NUM_CLASSES)))
    labels = load_labels(tmp_path / "labels.txt")
    clf = VideoClassifier.from_model(model, threads=1, labels=labels)
    rec = clf.classify(videos["bar"], num_clips=1, num_crops=1)
    assert rec["top"][0]["label"] == f"action {rec['top'][0]['index']}"


def test_bad_options_are_named(model):
    clf = VideoClassifier.from_model(model, threads=1)
    with pytest.raises(ConfigError, match="hop"):
        next(clf.stream("x.mp4", hop=0))
    with pytest.raises(ConfigError, match="smoothing"):
        next(clf.stream("x.mp4", smoothing=1.0))


def test_prefetch_reraises_producer_errors_in_order():
    def items():
        yield 1
        yield 2
        raise RuntimeError("boom")

    got = []
    with pytest.raises(RuntimeError, match="boom"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [1, 2]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_backends_agree_with_torch_in_both_modes(model, videos, tmp_path, backend):
    pytest.importorskip("e3d_export")
    pytest.importorskip({"onnxruntime": "onnxruntime", "openvino": "openvino"}[backend])
    ref = VideoClassifier.from_model(model, threads=1)
    clf = VideoClassifier.from_model(model, backend=backend, threads=1, cache_dir=tmp_path)
    assert clf.backend.name == backend
    a = ref.classify(videos["bar"], num_clips=2, return_probs=True)
    b = clf.classify(videos["bar"], num_clips=2, return_probs=True)
    assert np.allclose(a["probs"], b["probs"], atol=1e-4)
    wa = [w["probs"] for w in ref.stream(videos["bar"], hop=0.5, return_probs=True)]
    wb = [w["probs"] for w in clf.stream(videos["bar"], hop=0.5, return_probs=True)]
    assert len(wa) == len(wb) > 1 and np.allclose(wa, wb, atol=1e-4)
    # the artifact alone carries the preprocessing contract
    art = VideoClassifier.from_artifact(clf.backend.path, threads=1)
    assert art.sampling == clf.sampling and art.transform == clf.transform
    c = art.classify(videos["bar"], num_clips=2, return_probs=True)
    assert np.allclose(c["probs"], a["probs"], atol=1e-4)


def test_multi_view_on_a_long_video_seeks_and_matches_sequential_decoding(model, tmp_path):
    path = encode_video(tmp_path / "long.mp4", moving_bar(300, 32, 48), fps=30, options={"g": "15"})
    clf = VideoClassifier.from_model(model, threads=1, num_clips=3, num_crops=1)
    rec = clf.classify(path, return_probs=True)
    assert rec["frames_decoded"] < 150  # 3 clips of 7 frames in 300: seeks, no full decode
    with VideoReader(path) as r:
        frames, _ = r.read()
    idx = multi_view_indices(300, clf.sampling, 3)
    tf = EvalTransform.from_cfg(model.pretrained_cfg)
    expected = _direct(model, np.stack([tf(frames[i]) for i in idx])).mean(0)
    assert np.allclose(rec["probs"], expected, atol=1e-5)


def test_static_batch_artifact_is_fed_exact_batches(model, videos, tmp_path):
    e3d_export = pytest.importorskip("e3d_export")
    pytest.importorskip("onnxruntime")
    onnx = e3d_export.export_onnx(model, tmp_path / "b2.onnx", batch=2, dynamic_batch=False)
    clf = VideoClassifier.from_artifact(onnx, threads=1, batch_size=8)
    assert clf._fixed_batch() == 2
    ref = VideoClassifier.from_model(model, threads=1)
    a = clf.classify(videos["bar"], num_clips=1, num_crops=3, return_probs=True)  # 3 views: 2 + 1 padded
    b = ref.classify(videos["bar"], num_clips=1, num_crops=3, return_probs=True)
    assert np.allclose(a["probs"], b["probs"], atol=1e-4)


def test_label_count_must_match_the_classifier(model):
    from e3d_zoo.errors import DataError

    with pytest.raises(DataError, match="5 classes, found 2"):
        VideoClassifier.from_model(model, threads=1, labels=["a", "b"])


def test_sampling_by_time_on_variable_frame_rate_video_in_both_modes(model, tmp_path):
    from e3d_zoo.video.sampling import resample_indices

    rng = np.random.default_rng(1)
    times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.12, 39))])
    path = encode_video(tmp_path / "vfr.mp4", moving_bar(40, 32, 48), fps=30, times=times)
    clf = VideoClassifier.from_model(model, threads=1, num_crops=1)
    clf.sampling = clf.sampling.replace(sample_fps=10.0)
    with VideoReader(path) as r:
        ts = r.scan()
    grid = resample_indices(ts, 10.0)
    wins = list(clf.stream(path, hop=0.4, return_probs=True))  # hop = 4 grid slots
    assert len(wins) >= 3
    assert [w["start_time"] for w in wins] == pytest.approx([ts[grid[4 * k]] for k in range(len(wins))],
                                                            abs=1e-6)
    with VideoReader(path) as r:
        frames, _ = r.read()
    tf = EvalTransform.from_cfg(model.pretrained_cfg)
    expected = _direct(model, tf(frames[grid[4:8]])[None])[0]
    assert np.allclose(wins[1]["probs"], expected, atol=1e-5)
    rec = clf.classify(path, num_clips=2)
    assert rec["num_views"] == 2 and rec["num_frames"] == 40


def test_leaving_a_stream_early_stops_the_decoding_thread(model, videos):
    import gc
    import threading
    import time

    clf = VideoClassifier.from_model(model, threads=1)
    gen = clf.stream(videos["numbered"], hop=0.1, start_time=0.5)
    first = next(gen)
    assert first["start_time"] >= 0.5 - 1e-6  # --start seeks
    gen.close()
    gc.collect()
    deadline = time.time() + 5
    while any(t.name == "e3d-decode" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "e3d-decode" for t in threading.enumerate())


def test_views_of_several_videos_share_inference_batches(model, videos):
    calls = []
    clf = VideoClassifier.from_model(model, threads=1, batch_size=4)
    run = clf.backend.run
    clf.backend.run = lambda x: (calls.append(len(x)), run(x))[1]
    srcs = [videos["bar"], videos["numbered"], videos["short"], videos["bar"], videos["numbered"]]
    recs = list(clf.classify_many(srcs, num_clips=1, num_crops=1, return_probs=True))
    assert [r["source"] for r in recs] == [str(s) for s in srcs]
    assert calls == [4, 1]  # five one-view videos: one full batch of 4, then the rest
    single = VideoClassifier.from_model(model, threads=1)
    for r, s in zip(recs, srcs):
        assert np.allclose(r["probs"], single.classify(s, num_clips=1, num_crops=1,
                                                       return_probs=True)["probs"], atol=1e-5)


def test_views_hands_out_the_network_input(model, videos):
    clf = VideoClassifier.from_model(model, threads=1)
    x = clf.views(videos["bar"], num_clips=2, num_crops=3)
    assert tuple(x.shape) == (6, 3, 4, 32, 32) and x.dtype == np.float32
    rec = clf.classify(videos["bar"], num_clips=2, num_crops=3, return_probs=True)
    assert np.allclose(rec["probs"], _direct(model, x).mean(0), atol=1e-5)


def test_openvino_streams_run_windows_concurrently_with_identical_results(model, videos, tmp_path):
    """Two OpenVINO streams keep two windows in flight: records (order, times, smoothing)
    equal the one-request run, and whole-video views agree too."""
    pytest.importorskip("e3d_export")
    pytest.importorskip("openvino")
    one = VideoClassifier.from_model(model, backend="openvino", threads=2, cache_dir=tmp_path)
    two = VideoClassifier.from_artifact(one.backend.path, threads=2, batch_size=1,
                                        backend_options={"streams": 2})
    assert (one.backend.max_in_flight, two.backend.max_in_flight) == (1, 2)
    assert two.backend.describe()["streams"] == 2
    submitted = [two.backend.submit(np.full((1, 3, 4, 32, 32), v, np.float32)) for v in (0.1, -0.2, 0.3)]
    for v, future in zip((0.1, -0.2, 0.3), submitted):  # each future holds its own input's result
        assert np.allclose(future.result(), one.backend.run(np.full((1, 3, 4, 32, 32), v, np.float32)),
                           atol=1e-5)
    timing = {}
    a = list(one.stream(videos["bar"], hop=0.25, smoothing=0.5, return_probs=True))
    b = list(two.stream(videos["bar"], hop=0.25, smoothing=0.5, return_probs=True, timing=timing))
    assert len(a) == len(b) > 3
    assert [(w["window"], w["start_time"], w["end_time"]) for w in a] == \
        [(w["window"], w["start_time"], w["end_time"]) for w in b]
    assert np.allclose([w["probs"] for w in a], [w["probs"] for w in b], atol=1e-5)
    assert timing["infer_s"] > 0
    va = one.classify(videos["bar"], num_clips=2, return_probs=True)
    vb = two.classify(videos["bar"], num_clips=2, return_probs=True)
    assert np.allclose(va["probs"], vb["probs"], atol=1e-5)


def test_streams_option_is_checked(model, tmp_path):
    pytest.importorskip("openvino")
    from e3d_zoo.errors import BackendError

    with pytest.raises(BackendError, match="streams: expected an integer >= 1"):
        VideoClassifier.from_model(model, backend="openvino", cache_dir=tmp_path,
                                   backend_options={"streams": 0})


class _EventBackend(Backend):
    """Test double of a backend that runs two requests at once: records submissions, and
    the test records emissions, to see how many windows the pipeline keeps in flight."""

    name = "events"
    max_in_flight = 2

    def __init__(self, events):
        super().__init__(None)
        self.events = events

    def run(self, clips):
        return np.zeros((len(clips), NUM_CLASSES), np.float32)

    def submit(self, clips):
        self.events.append("submit")
        return super().submit(clips)


def test_files_keep_windows_in_flight_but_live_sources_emit_each_at_once(model, videos):
    cfg = VideoClassifier.from_model(model).cfg
    for source, opts, expect_ahead in ((videos["bar"], {}, True),
                                       ("testsrc2=size=48x32:rate=30:duration=1", {"format": "lavfi"}, False)):
        events = []
        clf = VideoClassifier(_EventBackend(events), cfg, batch_size=1)
        for _ in clf.stream(source, hop=0.25, reader_options=opts):
            events.append("emit")
        assert events.count("submit") == events.count("emit") >= 3
        if expect_ahead:  # a file: the next window is submitted before the previous is read
            assert events[:3] == ["submit", "submit", "emit"]
        else:  # live: every result is emitted before the next window goes in
            assert events == ["submit", "emit"] * events.count("emit")


def test_a_failed_openvino_request_raises_instead_of_hanging(model, tmp_path):
    """A request that fails on the runtime's side (test double: a request whose infer raises,
    as OpenVINO's does on a device error) reaches the caller as BackendError."""
    pytest.importorskip("openvino")
    from e3d_zoo.errors import BackendError

    clf = VideoClassifier.from_model(model, backend="openvino", cache_dir=tmp_path, threads=2,
                                     backend_options={"streams": 2})
    be = clf.backend
    be.submit(np.zeros((1, 3, 4, 32, 32), np.float32)).result(timeout=30)  # builds the workers

    class FailingRequest:
        def infer(self, inputs, share_inputs=False):  # the signature the backend calls
            raise RuntimeError("device lost (test double)")

    while not be._idle.empty():
        be._idle.get()
    be._idle.put(FailingRequest())
    with pytest.raises(BackendError, match="inference failed: device lost"):
        clf.predict(np.zeros((1, 3, 4, 32, 32), np.float32))


def test_a_file_stream_runs_one_window_per_call_unless_told_to_batch(model, videos):
    """Stream mode runs one window per call by default, files included (the classifier's
    batch_size is for video mode): measured ~1.6x faster end to end than batches of 8 on 2
    cores (docs/pipeline.md). With batch_windows, the first window still runs alone (time
    to first prediction), then batches follow."""
    cfg = VideoClassifier.from_model(model).cfg
    sizes = []

    class _BatchSizes(_EventBackend):
        def submit(self, clips):
            sizes.append(len(clips))
            return super().submit(clips)

    clf = VideoClassifier(_BatchSizes([]), cfg, batch_size=4)
    n = sum(1 for _ in clf.stream(videos["bar"], hop=0.1))
    assert n >= 5 and sizes == [1] * n
    sizes.clear()
    n = sum(1 for _ in clf.stream(videos["bar"], hop=0.1, batch_windows=4))
    assert sizes[0] == 1 and sizes[1] == 4 and sum(sizes) == n
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="batch_windows"):
            next(clf.stream(videos["bar"], hop=0.1, batch_windows=bad))


def test_decoder_resize_scales_frames_in_swscale_and_keeps_the_windows(model, tmp_path):
    """--decoder-resize: frames reach the transform at its resize size (aspect as
    torchvision keeps it, rotation applied), so it only crops; the windows are the same
    frames at the same times, their pixels within swscale's bilinear rounding of the
    exact path's."""
    from av.video.reformatter import VideoReformatter

    from e3d_runtime.video.decode import VideoReader as Reader

    path = encode_video(tmp_path / "wide.mp4", moving_bar(40, 96, 160), fps=30)  # 160x96 -> 53x32
    exact = VideoClassifier.from_model(model, threads=1, batch_size=1)
    fast = VideoClassifier.from_model(model, threads=1, batch_size=1, decoder_resize=True)
    with Reader(path, short_side=fast.transform.resize_size) as r:
        images = [f.image for f in r.frames(keep=lambda i, t: i % 2 == 0) if f.image is not None]
    assert images[0].shape == (32, 53, 3)  # torchvision: short side 32, long int(32 * 160 / 96)
    with Reader(path) as r:
        frame = next(iter(r._container.decode(r._stream)))
        expected = VideoReformatter().reformat(frame, width=53, height=32, format="rgb24",
                                               interpolation="BILINEAR").to_ndarray()
    assert np.array_equal(images[0], expected)
    a = list(exact.stream(path, hop=0.25, return_probs=True))
    b = list(fast.stream(path, hop=0.25, return_probs=True))
    assert [(w["start_time"], w["end_time"]) for w in a] == [(w["start_time"], w["end_time"]) for w in b]
    diff = max(float(np.abs(np.array(x["probs"]) - np.array(y["probs"])).max()) for x, y in zip(a, b))
    assert 0 < diff < 0.05
    # a frame no larger than the resize size is converted as is (no upscaling in swscale)
    with Reader(path, short_side=200) as r:
        assert next(f.image for f in r.frames()).shape == (96, 160, 3)
