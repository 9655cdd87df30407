"""Decoding real encoded videos: orientation, sizes, pixel formats, timing, bad inputs, streams."""
from __future__ import annotations

import numpy as np
import pytest

from e3d_zoo.errors import VideoError
from e3d_zoo.video.decode import StreamReader, VideoReader, expand_inputs
from e3d_zoo.video.writers import encode_video

from .helpers import (FileServer, RTSPPublisher, faststart_mp4, frame_number, moving_bar,
                      numbered_frames)


def test_rotation_metadata_gives_upright_frames(tmp_path):
    # landscape source whose left quarter is white, stored with a 90 deg CCW display rotation
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :16] = 255
    path = encode_video(tmp_path / "rot.mp4", [img] * 3, fps=10, rotation=90)
    with VideoReader(path) as r:
        assert r.info.rotation == 90
        assert (r.info.width, r.info.height) == (32, 64)
        frames, _ = r.read()
    assert frames.shape == (3, 64, 32, 3)
    # rotating CCW moves the left strip to the bottom
    assert frames[0, -16:].mean() > 200 and frames[0, :-16].mean() < 30


def _ffmpeg_cli_autorotate(image, matrix):
    """What the ``ffmpeg`` command line shows for a display matrix (fftools/ffmpeg_filter.c,
    FFmpeg 7: theta = -round(av_display_rotation_get), then transpose / hflip / vflip by
    the matrix's signs), written out independently of the reader's decomposition."""
    m = [v / 65536.0 for v in matrix]
    theta = -round(float(np.degrees(np.arctan2(m[1], m[0]))) * -1)
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    transpose = {  # FFmpeg's transpose filter directions
        "clock": lambda a: np.rot90(a, -1), "cclock": lambda a: np.rot90(a, 1),
        "cclock_flip": lambda a: np.rot90(a, 1)[::-1], "clock_flip": lambda a: np.rot90(a, -1)[::-1]}
    if abs(theta - 90) < 1:
        return transpose["cclock_flip" if m[3] > 0 else "clock"](image)
    if abs(theta - 180) < 1:
        out = image[:, ::-1] if m[0] < 0 else image
        return out[::-1] if m[4] < 0 else out
    if abs(theta - 270) < 1:
        return transpose["clock_flip" if m[3] < 0 else "cclock"](image)
    return image[::-1] if m[4] < 0 else image


@pytest.mark.parametrize("rotation,hflip,vflip", [
    (0, False, False), (90, False, False), (180, False, False), (270, False, False),
    (0, True, False), (90, True, False), (180, True, False), (270, True, False),
    (0, False, True), (90, False, True)])
def test_every_orientation_is_shown_as_ffmpeg_shows_it(tmp_path, rotation, hflip, vflip):
    import av

    # quadrants of distinct colours make all eight orientations distinguishable
    img = np.zeros((32, 48, 3), np.uint8)
    img[:16, :24] = (250, 0, 0)
    img[:16, 24:] = (0, 250, 0)
    img[16:, :24] = (0, 0, 250)
    img[16:, 24:] = (250, 250, 250)
    path = encode_video(tmp_path / "o.mp4", [img] * 2, fps=10, rotation=rotation, hflip=hflip,
                        vflip=vflip)
    with av.open(str(path)) as c:  # the matrix as FFmpeg hands it to a player
        frame = next(c.decode(video=0))
        sd = [d for d in frame.side_data if d.type.name == "DISPLAYMATRIX"]
        matrix = np.frombuffer(bytes(sd[0]), "<i4") if sd else np.array([65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30])
        stored = frame.to_ndarray(format="rgb24")
    expected = _ffmpeg_cli_autorotate(stored, matrix)
    # and what PyAV's writer documents: rotate counter-clockwise, then mirror
    by_doc = np.rot90(img, rotation // 90)
    by_doc = by_doc[:, ::-1] if hflip else by_doc
    by_doc = by_doc[::-1] if vflip else by_doc
    assert np.abs(expected.astype(int) - by_doc).mean() < 5  # 4:2:0 chroma blurs the edges only
    with VideoReader(path) as r:
        frames, _ = r.read()
        assert (r.info.height, r.info.width) == expected.shape[:2]
        assert r.info.mirrored == (hflip != vflip)
    assert np.array_equal(frames[0], np.ascontiguousarray(expected))


def test_odd_size_and_grayscale_decode_to_rgb(tmp_path):
    odd = encode_video(tmp_path / "odd.mp4", moving_bar(4, 33, 47), fps=10)
    with VideoReader(odd) as r:
        frames, _ = r.read()
    assert frames.shape == (4, 33, 47, 3)
    assert frames[0, :5, :5, 0].mean() > 180  # the red marker survived, top-left
    gray = encode_video(tmp_path / "gray.mkv", (np.full((31, 45), v, np.uint8) for v in (20, 120, 220)),
                        fps=10, codec="ffv1")
    with VideoReader(gray) as r:
        assert r.info.pix_fmt == "gray" and r.info.num_frames is None  # mkv has no frame count
        frames, _ = r.read()
    assert frames.shape == (3, 31, 45, 3)
    assert [int(f.mean()) for f in frames] == [20, 120, 220]  # ffv1 is lossless


def test_variable_frame_rate_keeps_presentation_times(tmp_path):
    times = [0.0, 0.04, 0.08, 0.5, 0.55, 1.3]
    path = encode_video(tmp_path / "vfr.mp4", numbered_frames(6, 32, 32), fps=25, times=times)
    with VideoReader(path) as r:
        ts = r.scan()
        frames, t2 = r.read()  # a second pass on the same reader starts over
    assert np.allclose(ts, times, atol=1e-3) and np.allclose(t2, times, atol=1e-3)
    assert [frame_number(f) for f in frames] == list(range(6))


def test_read_selects_frames_and_seek_starts_late(tmp_path):
    path = encode_video(tmp_path / "n.mp4", numbered_frames(12, 32, 32), fps=10)
    with VideoReader(path) as r:
        frames, ts = r.read([7, 2, 2, 9])
    assert [frame_number(f) for f in frames] == [7, 2, 2, 9]
    assert np.allclose(ts, [0.7, 0.2, 0.2, 0.9])
    with VideoReader(path) as r:
        later = [(f.time, frame_number(f.image)) for f in r.frames(start_time=0.6)]
    assert later[0] == pytest.approx((0.6, 6)) and len(later) == 6


def test_frames_not_requested_are_not_converted(tmp_path):
    path = encode_video(tmp_path / "n.mp4", numbered_frames(6, 16, 16), fps=10)
    with VideoReader(path) as r:
        got = list(r.frames(keep=lambda i, t: i % 2 == 0))
    assert [f.index for f in got] == list(range(6))
    assert [f.image is not None for f in got] == [True, False] * 3


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    import av

    d = tmp_path_factory.mktemp("bad")
    good = encode_video(d / "good.mp4", moving_bar(30, 32, 48), fps=30).read_bytes()
    (d / "cut_index.mp4").write_bytes(good[: len(good) // 2])  # moov atom at the end: lost
    fast = faststart_mp4(d / "fast.mp4", moving_bar(60, 32, 48)).read_bytes()
    (d / "cut_tail.mp4").write_bytes(fast[: len(fast) // 2])  # index intact, frames missing
    (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    (d / "empty.mp4").write_bytes(b"")
    c = av.open(str(d / "audio.m4a"), "w")
    s = c.add_stream("aac", rate=16000)
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    fr.sample_rate, fr.pts = 16000, 0
    for p in list(s.encode(fr)) + list(s.encode()):
        c.mux(p)
    c.close()
    c = av.open(str(d / "zero_frames.mkv"), "w")  # a video stream with no frames at all
    s = c.add_stream("libx264", rate=30)
    s.width, s.height = 32, 32
    c.start_encoding()
    c.close()
    return d


@pytest.mark.parametrize("name, message", [
    ("cut_index.mp4", "cannot open as a video"),
    ("corrupt.mp4", "cannot open as a video"),
    ("empty.mp4", "empty file"),
    ("audio.m4a", "no video stream .*audio"),
    ("zero_frames.mkv", "cannot open as a video|zero-length"),
    ("missing.mp4", "no such file"),
])
def test_bad_inputs_raise_one_clear_error_naming_the_file(bad_inputs, name, message):
    with pytest.raises(VideoError, match=message) as info:
        with VideoReader(bad_inputs / name) as r:
            r.read()
    assert name in str(info.value)


def test_truncated_video_reports_what_is_missing(bad_inputs):
    with VideoReader(bad_inputs / "cut_tail.mp4") as r:
        assert r.info.num_frames == 60
        with pytest.raises(VideoError, match=r"truncated: frame \d+ is needed but only \d+ frames"):
            r.read([0, 59])


def test_expand_inputs_lists_folder_videos(tmp_path):
    encode_video(tmp_path / "b" / "x.mp4", moving_bar(2, 16, 16), fps=10)
    (tmp_path / "notes.txt").write_text("not a video")
    assert expand_inputs([tmp_path, "rtsp://cam/live"]) == [str(tmp_path / "b" / "x.mp4"), "rtsp://cam/live"]


def test_http_stream_reads_every_frame(tmp_path):
    data = faststart_mp4(tmp_path / "s.mp4", numbered_frames(20, 32, 32), fps=10).read_bytes()
    server = FileServer(data)
    try:
        with StreamReader(server.url, timeout=5) as r:
            assert r.info.is_stream
            nums = [frame_number(f.image) for f in r.frames()]
    finally:
        server.close()
    assert nums == [i % 12 for i in range(20)]


def test_dropped_http_stream_reconnects_without_repeating_frames(tmp_path):
    data = faststart_mp4(tmp_path / "s.mp4", numbered_frames(40, 32, 32), fps=10).read_bytes()
    server = FileServer(data, drops=1, cut=len(data) // 2)
    try:
        with StreamReader(server.url, max_reconnects=2, backoff=0.01, timeout=5) as r:
            frames = list(r.frames())
            assert r.reconnects == 1
    finally:
        server.close()
    assert server.requests >= 2
    times = [f.time for f in frames]
    assert len(frames) == 40 and np.all(np.diff(times) > 0)
    assert [f.index for f in frames] == list(range(40))


def test_stream_that_keeps_dropping_stops_with_a_clear_message(tmp_path):
    data = faststart_mp4(tmp_path / "s.mp4", numbered_frames(40, 32, 32), fps=10).read_bytes()
    server = FileServer(data, drops=100, cut=len(data) // 2)
    try:
        with pytest.raises(VideoError, match="did not recover within 2 reconnect"):
            with StreamReader(server.url, max_reconnects=2, backoff=0.01, timeout=5) as r:
                for _ in r.frames():
                    pass
    finally:
        server.close()
    assert server.requests == 3  # the first connection + 2 reconnects, then it gives up


def test_unreachable_stream_url_is_a_clear_error():
    with socket_free_port() as port:
        with pytest.raises(VideoError, match="cannot connect to stream"):
            StreamReader(f"http://127.0.0.1:{port}/live.ts", timeout=2, max_reconnects=0)


class socket_free_port:
    """A port nothing listens on (bound, then released)."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc) -> None:
        pass


def test_seeking_reads_the_same_frames_while_decoding_fewer(tmp_path):
    # keyframe every 10 frames so a seek lands close to the wanted frame
    path = encode_video(tmp_path / "long.mp4", numbered_frames(120, 16, 16), fps=30,
                        options={"g": "10", "bf": "0"})
    want = [95, 97, 99]
    with VideoReader(path) as r:
        assert r.is_constant_rate()
        seq, t_seq = r.read(want)
        sequential = r.frames_decoded
    with VideoReader(path) as r:
        sk, t_sk = r.read_seek(want)
        seeking = r.frames_decoded
    assert np.array_equal(seq, sk) and np.allclose(t_seq, t_sk)
    assert [frame_number(f) for f in sk] == [i % 12 for i in want]
    assert seeking <= 15 < sequential


def test_rtsp_stream_reads_every_frame_in_order():
    """A real RTSP session over loopback (see RTSPPublisher): every frame arrives, in order,
    with increasing timestamps, through the same reader a camera URL goes through."""
    pub = RTSPPublisher(numbered_frames(30, 32, 32), fps=30)
    with StreamReader(pub.url, timeout=10, max_reconnects=0,
                      options=RTSPPublisher.READER_OPTIONS) as r:
        assert r.info.is_stream and r.info.codec == "h264"
        frames = list(r.frames())
    pub.join()
    assert [frame_number(f.image) for f in frames] == [i % 12 for i in range(30)]
    assert np.all(np.diff([f.time for f in frames]) > 0)


def test_frames_without_timestamps_get_increasing_times():
    """Live RTP streams can deliver their first frames without a pts: they are placed one
    frame before the first timed one (stream times then start at 0); later untimed frames
    follow the previous one by their duration."""
    from types import SimpleNamespace

    from e3d_zoo.video.decode import VideoInfo, VideoReader

    def reader(is_stream: bool) -> VideoReader:
        r = VideoReader.__new__(VideoReader)
        r._is_stream, r.frames_decoded = is_stream, 0
        r.info = VideoInfo("x", 8, 8, 30.0, None, None, 0, "h264", "yuv420p", is_stream)
        return r

    tb = 1 / 90000
    frames = [SimpleNamespace(pts=p, duration=3000) for p in (None, None, -870, 2130, None, 8130)]
    times = [t for _, t in reader(True)._timed(iter(frames), tb, t_origin=-780 * tb)]
    assert times == pytest.approx([0.0, 1 / 30, 2 / 30, 3 / 30, 4 / 30, 5 / 30])
    # a file keeps its container's origin
    times = [t for _, t in reader(False)._timed(iter(frames[2:]), tb, t_origin=-870 * tb)]
    assert times == pytest.approx([0.0, 1 / 30, 2 / 30, 3 / 30])
    # never a timestamp at all: counted from 0 at the frame rate
    untimed = [SimpleNamespace(pts=None, duration=None) for _ in range(12)]
    times = [t for _, t in reader(True)._timed(iter(untimed), tb, t_origin=0.0)]
    assert times == pytest.approx([i / 30 for i in range(12)])


def test_capture_device_path_with_libavdevice_lavfi():
    """A capture device through FFmpeg's device layer (libavdevice): the ``lavfi`` virtual
    device stands in for a camera (none on these machines); same ``format=`` path as v4l2."""
    src = "testsrc2=size=96x64:rate=15:duration=1"
    with VideoReader(src, format="lavfi") as r:
        assert r.info.is_stream and (r.info.width, r.info.height) == (96, 64)
        assert r.info.fps == 15.0 and r.info.duration is None  # live: no length known up front
        frames = list(r.frames(keep=lambda i, t: i % 2 == 0))
    assert len(frames) == 15
    assert np.allclose([f.time for f in frames], np.arange(15) / 15.0)
    assert all((f.image is not None) == (f.index % 2 == 0) for f in frames)
    assert frames[0].image.shape == (64, 96, 3) and frames[0].image.std() > 20  # a test pattern
    with StreamReader(src, format="lavfi", max_reconnects=1) as s:
        assert len(list(s.frames())) == 15 and s.reconnects == 0  # a clean end is not a drop


def test_missing_device_and_unknown_format_are_named():
    with pytest.raises(VideoError, match=r"/dev/video9: cannot open as a v4l2 input"):
        VideoReader("/dev/video9", format="v4l2")
    with pytest.raises(VideoError, match=r"unknown input format 'webcam'.*lavfi"):
        VideoReader("0", format="webcam")


def test_http_file_without_a_duration_ends_instead_of_replaying(tmp_path):
    """A raw H.264 file over HTTP has no duration, like a live stream; its end is still the
    end (only live protocols treat a closed connection as a drop)."""
    path = encode_video(tmp_path / "raw.h264", numbered_frames(30, 32, 32), fps=10)
    server = FileServer(path.read_bytes())
    try:
        with StreamReader(server.url.replace("video.mp4", "raw.h264"), max_reconnects=2,
                          backoff=0.01, timeout=5) as r:
            assert r.info.duration is None
            frames = list(r.frames())
            assert r.reconnects == 0
    finally:
        server.close()
    assert [frame_number(f.image) for f in frames] == [i % 12 for i in range(30)]


def test_a_streamed_source_learns_its_orientation_from_the_first_frame(tmp_path):
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :12] = 250
    path = encode_video(tmp_path / "rot.mp4", [img] * 4, fps=10, rotation=90, hflip=True,
                        container_options={"movflags": "faststart"})
    with VideoReader(path) as r:
        want, _ = r.read()
    server = FileServer(path.read_bytes())
    try:
        with VideoReader(server.url, timeout=5) as r:
            frames = [f.image for f in r.frames()]
            assert (r.info.rotation, r.info.mirrored) == (90, True)
            assert (r.info.width, r.info.height) == (32, 48)  # as displayed
    finally:
        server.close()
    assert np.array_equal(np.stack(frames), want)


def test_short_side_scaling_follows_the_displayed_orientation(tmp_path):
    """A rotated file scaled in the decoder comes out upright at the displayed aspect."""
    img = np.zeros((64, 128, 3), np.uint8)
    img[:, :32] = 255
    path = encode_video(tmp_path / "rot.mp4", [img] * 3, fps=10, rotation=90)
    with VideoReader(path, short_side=32) as r:
        frame = next(iter(r.frames())).image
    assert frame.shape == (64, 32, 3)  # displayed 128 x 64 -> short side 32
    assert frame[-16:].mean() > 200 and frame[:-20].mean() < 30  # the white strip at the bottom


@pytest.mark.parametrize("shape,pix_fmt,codec", [
    ((36, 64), "yuv420p", "libx264"), ((33, 47), "yuv444p", "libx264"),
    ((32, 48), "yuvj420p", "mjpeg"), ((31, 45), "gray", "ffv1")])
def test_frames_are_pyav_own_rgb_conversion(tmp_path, shape, pix_fmt, codec):
    # The reader keeps one single-threaded swscale context per video (speed); its pixels
    # must stay those of PyAV's per-frame `to_ndarray(format="rgb24")`, which training saw.
    import av

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, shape + ((3,) if pix_fmt != "gray" else ()), np.uint8) for _ in range(5)]
    path = encode_video(tmp_path / f"v_{pix_fmt}.mkv", frames, fps=10, codec=codec, pix_fmt=pix_fmt)
    with av.open(str(path)) as c:
        stored = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with VideoReader(path) as r:
        assert r.info.pix_fmt == pix_fmt
        decoded, _ = r.read()
    assert len(stored) == len(decoded) == 5
    for a, b in zip(stored, decoded):
        assert np.array_equal(a, b)


def test_the_reused_conversion_follows_a_size_change(tmp_path):
    # a live stream may change resolution mid-way: the reader's one swscale context must
    # follow it (PyAV reconfigures it per frame) and still give PyAV's own pixels
    import av

    path = encode_video(tmp_path / "v.mp4", moving_bar(3, 32, 48), fps=10)
    rng = np.random.default_rng(2)
    with VideoReader(path) as r:
        r.read()
        for h, w in [(64, 96), (36, 40), (32, 48)]:
            img = rng.integers(0, 256, (h, w, 3), np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            got = r._to_rgb(frame)
            assert got.shape == (h, w, 3)
            assert np.array_equal(got, frame.to_ndarray(format="rgb24"))
