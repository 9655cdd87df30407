"""Pulling RTSP as from a camera: FFmpeg's RTSP client (through VideoReader / StreamReader)
against a real RTSP server on 127.0.0.1 (helpers.RTSPServer: OPTIONS / DESCRIBE / SETUP /
PLAY, RTP interleaved over TCP, relaying an FFmpeg publisher), connections the server drops
or that go silent, a server gone for good, and e3d-infer on such a URL.

Frames are counted_frames: the decoded image names the frame, so lost, repeated or
reordered frames show up whatever the timestamps say.
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from e3d_zoo.cli.infer import main
from e3d_zoo.errors import VideoError
from e3d_zoo.video.decode import StreamReader, VideoReader

from .helpers import RTSPServer, counted_frames, counted_number, make_tiny_spec, moving_bar

H, W = 32, 96
OPTS = RTSPServer.READER_OPTIONS
# FFmpeg's own socket timeout (microseconds): a connection that goes silent fails a read
# after 1 s (VideoReader's timeout also bounds each open, which the first one needs longer)
SILENT_OPTS = {**OPTS, "timeout": "1000000"}


def _consecutive(nums) -> bool:
    return list(nums) == list(range(nums[0], nums[0] + len(nums)))


def test_pulled_stream_arrives_whole_and_in_order():
    server = RTSPServer(counted_frames(60, H, W), fps=30, gop=10)
    try:
        with VideoReader(server.url, options=OPTS, timeout=10) as r:
            info = r.info
            frames = list(r.frames())
    finally:
        server.close()
    assert server.error is None
    assert info.is_stream and info.codec == "h264" and (info.width, info.height) == (W, H)
    assert info.duration is None  # live
    nums = [counted_number(f.image) for f in frames]
    # the publisher starts with the first reader: it gets every frame, from a keyframe on
    # (frame 0, unless the publisher tired of waiting for it), to the publisher's last
    assert nums[0] == server.first_frames[0] and nums[0] % 10 == 0
    assert nums == list(range(nums[0], 60))
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    times = np.array([f.time for f in frames])
    assert times[0] == pytest.approx(0.0, abs=1e-9)  # a live stream's clock starts at 0
    assert np.allclose(np.diff(times), 1 / 30, atol=1e-4)  # the RTP timestamps, 90 kHz
    assert [f.index for f in frames] == list(range(len(frames)))
    methods = [req.split()[0] for req in server.requests]
    for method in ("ANNOUNCE", "RECORD", "DESCRIBE", "SETUP", "PLAY"):
        assert method in methods


def test_reader_joining_mid_stream_decodes_from_the_next_keyframe():
    server = RTSPServer(counted_frames(66, H, W), fps=30, gop=10)
    got: dict = {}

    def read(name: str) -> None:
        try:
            with VideoReader(server.url, options=OPTS, timeout=10) as r:
                got[name] = [(f.time, counted_number(f.image)) for f in r.frames()]
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            got[name] = exc

    try:
        early = threading.Thread(target=read, args=("early",), daemon=True)
        early.start()
        deadline = time.monotonic() + 30
        while server.frames_relayed < 25 and time.monotonic() < deadline:
            time.sleep(0.02)
        read("late")
        early.join(timeout=30)
    finally:
        server.close()
    for name in ("early", "late"):
        if isinstance(got.get(name), BaseException):
            raise got[name]
    early_nums = [n for _, n in got["early"]]
    late_times, late_nums = zip(*got["late"])
    assert early_nums == list(range(early_nums[0], 66))
    # the late reader starts on a keyframe (SPS/PPS in band) after the early one's start,
    # decodes every frame from there, and its clock starts at its own first frame
    start = server.first_frames[1]
    assert start >= 25 and start % 10 == 0
    assert list(late_nums) == list(range(start, 66))
    assert late_times[0] == pytest.approx(0.0, abs=1e-9) and np.all(np.diff(late_times) > 0)


def _pull_across_a_drop(server: RTSPServer, options: dict, after: int = 20,
                        deadline: float = 30.0):
    """StreamReader over ``server`` until ``after`` frames came after a reconnect (or the
    stream ended): [(index, time, frame number, reconnects so far)], reconnects."""
    server.wait_ready()
    rows = []
    with StreamReader(server.url, max_reconnects=3, backoff=0.1, options=options, timeout=10) as r:
        stop = time.monotonic() + deadline  # a guard against hanging, not a timing check
        for f in r.frames():
            rows.append((f.index, f.time, counted_number(f.image), r.reconnects))
            if sum(1 for row in rows if row[3]) >= after or time.monotonic() > stop:
                break
        return rows, r.reconnects


@pytest.fixture(scope="module")
def stalled_once():
    """The server stops sending to the first reader after 40 frames but keeps the
    connection open (the network stopped carrying packets): the read times out, the
    StreamReader reconnects. The publisher runs far longer than the test reads."""
    server = RTSPServer(counted_frames(900, H, W), fps=30, gop=10, drop_after=40, drop_mode="stall")
    try:
        rows, reconnects = _pull_across_a_drop(server, SILENT_OPTS)
    finally:
        server.close()
    return rows, reconnects, list(server.first_frames), server.dropped


def test_stream_reader_reconnects_after_a_silent_connection(stalled_once):
    rows, reconnects, first_frames, dropped = stalled_once
    assert dropped == 1 and reconnects >= 1 and len(first_frames) >= 2
    index, times, nums, attempt = zip(*rows)
    before = [n for n, a in zip(nums, attempt) if a == 0]
    after = [n for n, a in zip(nums, attempt) if a == reconnects]
    # the first session: frames 0.. up to where the server went silent
    assert before == list(range(len(before))) and 1 <= len(before) <= 40
    # the iteration went on after the reconnect, with later frames, none twice
    assert len(after) >= 20 and _consecutive(after) and after[0] > before[-1]
    assert np.all(np.diff(nums) > 0)
    assert np.all(np.diff(times) > 0)
    assert list(index) == list(range(len(rows)))


def test_reconnect_delivers_the_new_session_from_its_first_frame(stalled_once):
    rows, reconnects, first_frames, _ = stalled_once
    after = [n for _, _, n, a in rows if a == reconnects]
    # the server forwarded the new session's frames from first_frames[-1] (a keyframe) on
    assert after[0] == first_frames[-1]


@pytest.mark.parametrize("mode", ["cut", "cut_mid_packet"])
def test_stream_reader_reconnects_after_the_server_closes_the_connection(mode):
    server = RTSPServer(counted_frames(900, H, W), fps=30, gop=10, drop_after=40, drop_mode=mode)
    try:
        rows, reconnects = _pull_across_a_drop(server, OPTS)
    finally:
        server.close()
    assert server.dropped == 1
    nums = [n for _, _, n, _ in rows]
    assert reconnects >= 1 and nums[-1] > 40
    assert np.all(np.diff(nums) > 0) and np.all(np.diff([t for _, t, _, _ in rows]) > 0)


def test_server_gone_for_good_stops_with_a_clear_error():
    server = RTSPServer(counted_frames(900, H, W), fps=30)
    nums = []
    try:
        server.wait_ready()
        reader = StreamReader(server.url, max_reconnects=2, backoff=0.1, options=SILENT_OPTS, timeout=10)
        with pytest.raises(VideoError) as caught:
            with reader:
                for f in reader.frames():
                    nums.append(counted_number(f.image))
                    if len(nums) == 20:
                        server.vanish()  # silent connection, then connections refused
        with pytest.raises(VideoError, match="cannot connect to stream"):
            VideoReader(server.url, options=OPTS, timeout=10)
    finally:
        server.close()
    msg = str(caught.value)
    assert server.url in msg
    assert "did not recover within 2 reconnect attempt(s)" in msg
    assert f"stopped after {len(nums)} frames" in msg and "cannot connect to stream" in msg
    assert reader.reconnects == 2
    assert len(nums) >= 20 and nums == list(range(len(nums)))


def test_cli_stream_mode_on_a_pulled_rtsp_url(tmp_path, capsys):
    """e3d-infer rtsp://... --mode stream, FFmpeg options given with --input-option as a
    user would for a camera; the stream ends when the publisher does."""
    arch = tmp_path / "tiny.json"
    make_tiny_spec(frames=4, size=32).save(arch)
    server = RTSPServer(moving_bar(45, 32, 32), fps=30)
    jsonl = tmp_path / "windows.jsonl"
    try:
        rc = main([server.url, "--model", str(arch), "--random-weights", "--num-classes", "3",
                   "--threads", "1", "--mode", "stream", "--hop", "0.25", "--timeout", "10",
                   "--max-reconnects", "0", "--input-option=rtsp_transport=tcp",
                   "--jsonl", str(jsonl), "--json"])
    finally:
        server.close()
    assert server.error is None
    assert rc == 0
    wins = json.loads(capsys.readouterr().out)["records"]
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    # 45 frames at 30 fps, stride 2, windows of 4 sampled frames, hop 0.25 s
    assert len(wins) >= 4 and [r["end_time"] for r in recs] == [w["end_time"] for w in wins]
    assert all(r["kind"] == "window" and r["source"] == server.url and len(r["top"]) == 3
               for r in recs)
    ends = [w["end_time"] for w in wins]
    assert ends == sorted(ends)


def test_each_outage_gets_its_own_reconnect_allowance():
    """A camera that drops twice, each time coming back: one attempt per outage suffices,
    since a session that delivers new frames resets the allowance."""
    server = RTSPServer(counted_frames(900, H, W), fps=30, gop=10, drop_after=30, drops=2)
    try:
        server.wait_ready()
        rows = []
        with StreamReader(server.url, max_reconnects=1, backoff=0.1, options=OPTS, timeout=10) as r:
            for f in r.frames():
                rows.append((f.time, counted_number(f.image)))
                if r.reconnects >= 2 and len(rows) > 100:
                    break
            assert r.reconnects == 2
    finally:
        server.close()
    assert server.dropped == 2
    assert np.all(np.diff([n for _, n in rows]) > 0) and np.all(np.diff([t for t, _ in rows]) > 0)
