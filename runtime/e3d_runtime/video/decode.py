"""Decoding with PyAV (FFmpeg ships inside its wheel): files, folders, stream URLs, devices.

:class:`VideoReader` wraps one input and yields :class:`Frame` objects in
presentation order: frame index, presentation time (seconds from the stream start),
and - only when the caller asks for that frame - the RGB image. Frames a clip does
not use are still decoded (inter-frame codecs need them) but never converted to RGB,
which is the expensive half of decoding at clip-sampling strides.

Handled on the way in:

* orientation metadata (the display matrix: a rotation by a multiple of 90 degrees,
  optionally mirrored - all eight EXIF orientations): images come out as a player
  shows them, by the same rules as the ``ffmpeg`` command line's autorotate;
* any pixel format, including grayscale and odd sizes: swscale converts to rgb24;
* variable frame rate: times are the real presentation times, not ``index / fps``;
* ``start_time``: seeks to the keyframe before it and decodes forward (no full scan);
* stream URLs (``rtsp://``, ``http://`` ...) with open/read timeouts; a dropped live
  stream is reconnected by :class:`StreamReader` a bounded number of times;
* pushed RTSP (the reader listens, a camera or encoder publishes to it):
  ``options={"rtsp_flags": "listen"}``; the wait for the publisher is bounded by
  ``timeout`` through FFmpeg's ``listen_timeout``;
* capture devices: pass ``format="v4l2"`` (Linux) / ``"avfoundation"`` / ``"dshow"``
  with the device name as the source. The device path is tested with libavdevice's
  ``lavfi`` virtual device (``format="lavfi"``, source ``"testsrc2=size=320x240:rate=30"``);
  a real camera is not (none on the build machines). An unknown format or a missing
  device is a :class:`VideoError` naming both.

Every failure becomes :class:`~e3d_zoo.errors.VideoError` naming the input.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import VideoError, require
from .transforms import resized_short_side

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                    ".flv", ".wmv", ".3gp", ".ogv", ".gif")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "udp://",
                  "tcp://", "srt://", "rtp://")

# protocols that only carry live sources: a closed connection is a drop, not the end of a
# file, and every session's clock starts anew (HTTP serves files too, so it is not here)
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "udp://", "tcp://", "srt://", "rtp://")

Source = Union[str, os.PathLike]


def _av():
    return require("av", "video", "decoding video")


def is_stream_url(source: Source) -> bool:
    return str(source).lower().startswith(STREAM_SCHEMES)


def list_videos(folder: Source) -> List[Path]:
    """Video files under ``folder`` (recursive, by extension), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise VideoError(f"{root}: not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def expand_inputs(inputs: Sequence[Source]) -> List[str]:
    """Files stay, folders expand to their videos, URLs and devices pass through."""
    out: List[str] = []
    for item in inputs:
        s = os.fspath(item)
        if not is_stream_url(s) and Path(s).is_dir():
            out.extend(str(p) for p in list_videos(s))
        else:
            out.append(s)
    return out


@dataclass
class VideoInfo:
    source: str
    width: int          # as displayed (after rotation)
    height: int
    fps: Optional[float]  # average rate from the container, None when unknown
    duration: Optional[float]  # seconds, None for live streams
    num_frames: Optional[int]  # from the container header; None when it does not say
    rotation: int       # counter-clockwise degrees applied to every image
    codec: str
    pix_fmt: Optional[str]
    is_stream: bool
    mirrored: bool = False  # mirrored left-right after the rotation (display-matrix flip)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Frame:
    index: int              # 0-based, in presentation order, counted from where reading began
    time: float             # presentation time, seconds since the stream's start
    duration: Optional[float]
    image: Optional[np.ndarray] = None  # (H, W, 3) uint8 RGB, upright; None if not requested


@dataclass(frozen=True)
class Orientation:
    """How stored pixels become displayed ones: rotate ``rotation`` degrees counter-clockwise
    (a multiple of 90), then mirror left-right if ``mirrored`` (a vertical flip is rotation
    180 + mirror). Read from a frame's display matrix."""

    rotation: int = 0
    mirrored: bool = False

    @classmethod
    def of_frame(cls, frame: Any) -> "Orientation":
        matrix = None
        for data in frame.side_data:
            if data.type.name == "DISPLAYMATRIX":
                matrix = np.frombuffer(bytes(data), dtype="<i4").astype(np.float64)
                break
        if matrix is None:
            return cls()
        return cls.from_display_matrix(matrix)

    @classmethod
    def from_display_matrix(cls, matrix: Sequence[float]) -> "Orientation":
        """FFmpeg's 3x3 display matrix (row-major, 16.16 fixed point in its first two columns).

        A negative determinant of the 2x2 part is a mirror. FFmpeg's ``av_display_matrix_flip``
        mirrors by negating the first column, applied after the rotation, so negating it
        again leaves the rotation, read as ``av_display_rotation_get`` does
        (``VideoFrame.rotation``: ``-atan2(m[1], m[0])``, counter-clockwise degrees).
        """
        a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
        mirrored = a * d - b * c < 0
        if mirrored:
            a, c = -a, -c
        if a == 0 and b == 0:
            return cls()
        degrees = -np.degrees(np.arctan2(b, a))
        return cls(rotation=int(round(degrees / 90.0)) % 4 * 90, mirrored=bool(mirrored))

    @property
    def swaps_axes(self) -> bool:
        return self.rotation % 180 != 0

    def apply(self, image: np.ndarray) -> np.ndarray:
        k = self.rotation // 90
        if k == 0 and not self.mirrored:
            return image
        out = np.rot90(image, k) if k else image
        if self.mirrored:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


def _describe_av_error(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return msg.strip() or type(exc).__name__


class VideoReader:
    """One opened video input. Use as a context manager or call :meth:`close`.

    ``threads``: decoder threads (0 = FFmpeg's choice). ``timeout``: seconds to wait
    when opening / reading a network stream. ``format`` / ``options`` go to
    ``av.open`` (e.g. ``format="v4l2"``, ``options={"rtsp_transport": "tcp"}``).
    ``short_side``: scale frames whose displayed short side is longer down to it (aspect
    kept as torchvision's resize keeps it) in the same swscale pass that converts them to
    RGB (bilinear); ``None`` delivers the decoded size.
    """

    def __init__(self, source: Source, *, threads: int = 0, timeout: float = 10.0,
                 format: Optional[str] = None, options: Optional[Dict[str, str]] = None,
                 short_side: Optional[int] = None):
        self.source = os.fspath(source)
        self._is_stream = is_stream_url(self.source) or format is not None
        if not self._is_stream and not Path(self.source).exists():
            raise VideoError(f"{self.source}: no such file")
        if not self._is_stream and Path(self.source).is_file() and Path(self.source).stat().st_size == 0:
            raise VideoError(f"{self.source}: empty file (0 bytes), not a video")
        self._format, self._options, self._timeout, self._threads = format, options, timeout, threads
        self._short_side = short_side
        self._reformatter: Any = None
        self.frames_decoded = 0  # every frame the decoder produced, converted or not
        self._started = False
        self._open()
        first = None
        if not self._is_stream:
            # Orientation lives in per-frame side data (PyAV exposes no stream getter), and
            # decoding one frame up front also turns zero-length and undecodable files
            # into an error at open time rather than half-way through a batch.
            first = self._peek_first_frame()
            self._container.close()
            self._open()
        self._describe(first)

    def _open(self) -> None:
        av = _av()
        options = dict(self._options or {})
        timeout = (self._timeout, self._timeout) if self._is_stream else None
        if "listen" in str(options.get("rtsp_flags", "")):
            # Receiving a pushed RTSP stream: PyAV's timeout (an interrupt callback) never lets
            # FFmpeg's listening socket accept the publisher (the open hangs), so the wait is
            # bounded by FFmpeg's own listen_timeout (seconds) instead.
            options.setdefault("listen_timeout", str(max(1, int(round(self._timeout)))))
            timeout = None
        # FFmpeg lists aliases together ("video4linux2,v4l2")
        known = {name for entry in av.formats_available for name in entry.split(",")}
        if self._format is not None and self._format not in known:
            devices = sorted(f for f in ("v4l2", "lavfi", "x11grab", "kmsgrab", "fbdev", "avfoundation",
                                         "dshow", "gdigrab") if f in known)
            raise VideoError(f"{self.source}: unknown input format {self._format!r}; this FFmpeg "
                             f"has capture devices: {', '.join(devices) or 'none'}")
        try:
            self._container = av.open(self.source, mode="r", format=self._format,
                                      options=options, timeout=timeout)
        except av.error.FFmpegError as exc:
            if is_stream_url(self.source):
                what = "cannot connect to stream"
            elif self._format is not None:
                what = f"cannot open as a {self._format} input (capture device or source)"
            else:
                what = "cannot open as a video"
            raise VideoError(f"{self.source}: {what}: {_describe_av_error(exc)}") from exc
        except OSError as exc:
            raise VideoError(f"{self.source}: cannot open: {exc}") from exc
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            self._container.close()
            raise VideoError(f"{self.source}: no video stream (streams found: {', '.join(kinds)})")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        if self._threads:
            self._stream.codec_context.thread_count = int(self._threads)

    def _peek_first_frame(self) -> Any:
        av = _av()
        try:
            for frame in self._container.decode(self._stream):
                return frame
        except av.error.FFmpegError as exc:
            self._container.close()
            raise VideoError(f"{self.source}: cannot decode the video stream (corrupt or "
                             f"truncated?): {_describe_av_error(exc)}") from exc
        self._container.close()
        raise VideoError(f"{self.source}: zero-length video (the video stream has no frames)")

    def _describe(self, frame: Any = None) -> None:
        """``info`` from the container, settled by a decoded ``frame`` when there is one:
        its orientation (applied to every image; like ffmpeg's autorotate, one per stream)
        and, when probing timed out on a stream, its size and pixel format."""
        self._orientation = Orientation.of_frame(frame) if frame is not None else Orientation()
        st = self._stream
        cc = st.codec_context
        rate = st.average_rate or st.guessed_rate or st.base_rate
        fps = float(rate) if rate else None
        duration = None
        if st.duration is not None and st.time_base:
            duration = float(st.duration * st.time_base)
        elif self._container.duration:
            duration = self._container.duration / 1_000_000.0
        frames = int(st.frames) if st.frames else None
        w, h = int(cc.width or 0), int(cc.height or 0)
        pix_fmt = cc.pix_fmt
        if frame is not None:
            w, h = int(frame.width), int(frame.height)
            pix_fmt = pix_fmt or getattr(frame.format, "name", None)
        if self._orientation.swaps_axes:
            w, h = h, w
        self.info = VideoInfo(source=self.source, width=w, height=h, fps=fps, duration=duration,
                              num_frames=frames, rotation=self._orientation.rotation,
                              mirrored=self._orientation.mirrored, codec=cc.name or "?",
                              pix_fmt=pix_fmt, is_stream=self._is_stream)

    # ---- reading ---------------------------------------------------------------
    def frames(self, keep: Optional[Callable[[int, float], bool]] = None,
               start_time: Optional[float] = None) -> Iterator[Frame]:
        """Decode in order; ``keep(index, time)`` says which frames get an RGB image.

        With ``start_time`` the reader seeks to the keyframe at or before it and
        yields frames from ``start_time`` on (indices then count from there).
        """
        av = _av()
        if self._started:
            if self._is_stream:
                raise VideoError(f"{self.source}: a live stream can only be read once per reader")
            self._container.close()  # a second pass over a file starts from the beginning
            self._open()
        self._started = True
        st = self._stream
        tb = float(st.time_base) if st.time_base else 1.0 / 90000
        t_origin = float(st.start_time * st.time_base) if st.start_time is not None else 0.0
        if start_time is not None and start_time > 0:
            try:
                self._container.seek(int((start_time + t_origin) / tb), stream=st, backward=True,
                                     any_frame=False)
            except av.error.FFmpegError as exc:
                raise VideoError(f"{self.source}: cannot seek to {start_time:.3f}s: "
                                 f"{_describe_av_error(exc)}") from exc
        index = 0
        last_time = -np.inf
        try:
            for frame, t in self._timed(self._container.decode(st), tb, t_origin):
                if start_time is not None and t < start_time - 1e-6:
                    continue
                if index == 0 and self._is_stream:  # nothing was decoded at open time
                    self._describe(frame)
                last_time = t
                dur = float(frame.duration * tb) if frame.duration else (
                    1.0 / self.info.fps if self.info.fps else None)
                image = None
                if keep is None or keep(index, t):
                    image = self._to_rgb(frame)
                yield Frame(index=index, time=float(t), duration=dur, image=image)
                index += 1
        except av.error.FFmpegError as exc:
            what = "stream read failed" if self._is_stream else "decoding failed (corrupt or truncated?)"
            raise VideoError(f"{self.source}: {what} after {index} frames: "
                             f"{_describe_av_error(exc)}") from exc

    def _timed(self, decoded: Iterator[Any], tb: float, t_origin: float,
               max_untimed: int = 8) -> Iterator[Tuple[Any, float]]:
        """(frame, seconds since the start) in decoding order.

        A frame without a timestamp after a timed one follows it by its duration (or
        1/fps). Live RTSP/RTP streams often deliver their first frame(s) with no timestamp:
        those wait (at most ``max_untimed`` frames) for the first timed frame and are placed
        before it, one frame duration apart, so times stay strictly increasing; a live
        stream's times then start at 0 at its first frame.
        """
        fps_step = 1.0 / self.info.fps if self.info.fps else 0.0
        last: Optional[float] = None
        waiting: List[Any] = []
        origin = t_origin
        for frame in decoded:
            self.frames_decoded += 1
            step = float(frame.duration * tb) if frame.duration else fps_step
            if frame.pts is None:
                if last is not None:
                    last += step
                    yield frame, last
                elif len(waiting) < max_untimed:
                    waiting.append(frame)
                else:  # nothing timed yet after several frames: count from 0
                    for k, early in enumerate(waiting):
                        yield early, k * step
                    last = len(waiting) * step
                    waiting = []
                    yield frame, last
                continue
            raw = frame.pts * tb
            if last is None and self._is_stream:
                origin = raw - len(waiting) * step
            t = raw - origin
            for k, early in enumerate(waiting):
                yield early, t - (len(waiting) - k) * step
            waiting = []
            last = t
            yield frame, t
        for k, early in enumerate(waiting):  # a stream that never said when
            yield early, k * fps_step

    def _to_rgb(self, frame: Any) -> np.ndarray:
        # One swscale context for the whole video, single-threaded: `frame.to_ndarray(
        # format=...)` makes a new context per frame, and with swscale's default
        # (threads=0: one per core, FFmpeg 8) that means starting and joining threads
        # for every frame: ~5 ms instead of ~0.2 ms per 640x360 frame on 2 busy cores.
        # The pixels are identical (tests/video/test_decode.py, docs/pipeline.md).
        if self._reformatter is None:
            from av.video.reformatter import VideoReformatter

            self._reformatter = VideoReformatter()
        width = height = None  # the frame's own size
        if self._short_side is not None and min(frame.width, frame.height) > self._short_side:
            swap = self._orientation.swaps_axes
            h, w = (frame.width, frame.height) if swap else (frame.height, frame.width)  # as displayed
            rh, rw = resized_short_side(h, w, self._short_side)
            width, height = (rh, rw) if swap else (rw, rh)
        rgb = self._reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                         interpolation="BILINEAR", threads=1)
        return self._orientation.apply(rgb.to_ndarray())

    def read(self, indices: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Frames at ``indices`` (repeats allowed) as ``(len, H, W, 3)`` uint8 plus their times.

        One decoding pass that stops after the last wanted frame. ``None`` reads all.
        """
        want = None if indices is None else np.asarray(indices, dtype=np.int64)
        wanted = None if want is None else set(int(i) for i in want)
        last = None if want is None or want.size == 0 else int(want.max())
        images: Dict[int, np.ndarray] = {}
        times: Dict[int, float] = {}
        order: List[int] = []
        decoded = 0
        for fr in self.frames(keep=None if wanted is None else (lambda i, t: i in wanted)):
            decoded += 1
            if fr.image is not None:
                images[fr.index] = fr.image
                times[fr.index] = fr.time
                order.append(fr.index)
            if last is not None and fr.index >= last:
                break
        if not images:
            raise VideoError(f"{self.source}: no decodable video frames (zero-length or corrupt)")
        if want is None:
            want = np.asarray(order, dtype=np.int64)
        missing = [int(i) for i in want if int(i) not in images]
        if missing:
            header = f" (the header says {self.info.num_frames})" if self.info.num_frames else ""
            raise VideoError(f"{self.source}: truncated: frame {missing[0]} is needed but only "
                             f"{decoded} frames are decodable{header}")
        return np.stack([images[int(i)] for i in want]), np.asarray([times[int(i)] for i in want])

    def is_constant_rate(self) -> bool:
        """Whether index <-> time is ``index / fps`` (header frame count matches duration)."""
        i = self.info
        if self._is_stream or not (i.fps and i.num_frames and i.duration):
            return False
        return abs(i.duration * i.fps - i.num_frames) <= 1.0

    def read_seek(self, indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Like :meth:`read` for a constant-rate file, but seeks to the first wanted frame
        (nearest keyframe before it) instead of decoding from the start."""
        if not self.is_constant_rate():
            return self.read(indices)
        fps = float(self.info.fps)
        want = np.asarray(indices, dtype=np.int64)
        wanted = set(int(i) for i in want)
        first, last = int(want.min()), int(want.max())
        got: Dict[int, Tuple[np.ndarray, float]] = {}
        for fr in self.frames(keep=lambda i, t: int(round(t * fps)) in wanted,
                              start_time=max(first - 0.5, 0.0) / fps):
            k = int(round(fr.time * fps))
            if fr.image is not None:
                got[k] = (fr.image, fr.time)
            if k >= last:
                break
        missing = [int(i) for i in want if int(i) not in got]
        if missing:
            raise VideoError(f"{self.source}: truncated: frame {missing[0]} is needed but cannot be "
                             f"decoded (the header says {self.info.num_frames} frames)")
        return (np.stack([got[int(i)][0] for i in want]),
                np.asarray([got[int(i)][1] for i in want]))

    def scan(self) -> np.ndarray:
        """Presentation times of every frame, decoding but converting nothing."""
        ts = np.asarray([fr.time for fr in self.frames(keep=lambda i, t: False)], dtype=np.float64)
        if ts.size == 0:
            raise VideoError(f"{self.source}: no decodable video frames (zero-length or corrupt)")
        return ts

    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None:
            c.close()
            self._container = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_video(source: Source, **kwargs: Any) -> VideoReader:
    return VideoReader(source, **kwargs)


class StreamReader:
    """Frames from a live source that survives dropped connections.

    When the connection fails (an FFmpeg error while reading, or - for a live protocol -
    the connection closing, which FFmpeg's RTSP/TCP client reports as a plain end of
    stream), the stream is reopened up to ``max_reconnects`` times per outage, waiting
    ``backoff * attempt`` seconds between tries. After an outage's last failed attempt it
    stops with a :class:`VideoError` that says how often it tried. ``reconnects`` counts
    every reconnection over the reader's life; a stream that comes back and delivers new
    frames starts a fresh allowance, so a camera that drops once a day keeps running, while
    one that connects but never gets further still stops.

    Frame times continue across a reconnect. A live protocol (RTSP, RTMP, SRT, UDP, RTP,
    TCP) starts its clock at 0 in every session, so a reopened one continues after the
    last delivered frame by the wall time since that frame was handed out (the outage,
    plus any time the consumer held the generator). HTTP serves files as well as live
    streams, and a reopened file replays from its start, so over HTTP frames up to the
    last delivered time are skipped (a live HTTP stream therefore resumes only once its
    new clock passes the old one). Frame indices keep counting. The end of an HTTP source
    or a device (``format=...``) ends iteration normally; so does any end with
    ``max_reconnects=0``.
    """

    def __init__(self, source: Source, *, max_reconnects: int = 3, backoff: float = 0.5,
                 **reader_kwargs: Any):
        self.source = os.fspath(source)
        self.max_reconnects = int(max_reconnects)
        self.backoff = float(backoff)
        self.reader_kwargs = reader_kwargs
        self.reconnects = 0
        self.reader: Optional[VideoReader] = VideoReader(self.source, **reader_kwargs)  # unreachable: fails here
        self.info = self.reader.info

    def frames(self, keep: Optional[Callable[[int, float], bool]] = None) -> Iterator[Frame]:
        next_index = 0
        last_time = -np.inf
        offset = 0.0  # added to the open session's times
        last_wall: Optional[float] = None  # time.monotonic() at the last delivered frame
        attempts = 0  # reconnection attempts since the last new frame
        while True:
            assert self.reader is not None
            live = self.source.lower().startswith(LIVE_SCHEMES)
            try:
                for fr in self.reader.frames(keep=lambda i, t: t + offset > last_time and (
                        keep is None or keep(next_index, t + offset))):
                    t = fr.time + offset
                    if t <= last_time:
                        continue  # replayed after a reconnect
                    fr.time, fr.index = t, next_index
                    next_index += 1
                    last_time, last_wall = t, time.monotonic()
                    attempts = 0
                    yield fr
                if not (live and self.max_reconnects > 0):
                    return
                raise VideoError(f"{self.source}: the live stream ended (connection closed)")
            except VideoError as exc:
                self.reader.close()
                self.reader = None
                cause = exc
                while attempts < self.max_reconnects:
                    attempts += 1
                    self.reconnects += 1
                    time.sleep(self.backoff * attempts)
                    try:
                        self.reader = VideoReader(self.source, **self.reader_kwargs)
                        break
                    except VideoError as again:
                        cause = again
                if self.reader is None:
                    raise VideoError(f"{self.source}: stream dropped and did not recover within "
                                     f"{self.max_reconnects} reconnect attempt(s); stopped after "
                                     f"{next_index} frames (last error: {cause})") from cause
                if live and last_wall is not None:
                    # the new session's first frame (its time 0) comes as long after the last
                    # delivered one as the stream was away, and at least a frame later
                    step = 1.0 / self.info.fps if self.info.fps else 1e-3
                    offset = last_time + max(time.monotonic() - last_wall, step)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def __enter__(self) -> "StreamReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
