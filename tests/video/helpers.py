"""Test assets: real videos encoded with PyAV, and a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from e3d_zoo.video.writers import encode_video


def moving_bar(n: int, h: int, w: int, seed: int = 0) -> Iterator[np.ndarray]:
    """A white bar sliding right on a noisy background, a red square marking the top-left."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        x = (i * 3) % max(w - 4, 1)
        img[:, x:x + 4] = 255
        img[: max(h // 4, 1), : max(w // 4, 1)] = (220, 0, 0)
        yield img


def numbered_frames(n: int, h: int, w: int) -> Iterator[np.ndarray]:
    """Frame i is a flat gray of level 10 + 20*i (mod 240): the decoded level names the frame."""
    for i in range(n):
        yield np.full((h, w, 3), 10 + (20 * i) % 240, np.uint8)


def frame_number(image: np.ndarray) -> int:
    return int(round((float(image.mean()) - 10) / 20))


class FileServer:
    """Serves bytes over HTTP/1.1 with Range support; the first ``drops`` responses are
    cut after ``cut`` bytes and the socket is shut down (a real dropped connection)."""

    def __init__(self, data: bytes, drops: int = 0, cut: Optional[int] = None):
        self.data, self.drops, self.cut, self.requests = data, drops, cut, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.requests += 1
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                body = server.data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if rng:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(server.data) - 1}/{len(server.data)}")
                self.end_headers()
                if server.drops > 0:
                    server.drops -= 1
                    self.wfile.write(body[: server.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/video.mp4"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def faststart_mp4(path: Path, frames, fps: float = 30.0) -> Path:
    """An MP4 with the index first (streamable over HTTP, truncatable mid-file)."""
    return encode_video(path, frames, fps, options=None, container_options={"movflags": "faststart"})


def make_tiny_spec(**kwargs):
    from tiny_arch import make_tiny_spec as _make

    return _make(**kwargs)


class RTSPPublisher:
    """A real RTSP session on 127.0.0.1: FFmpeg's RTSP muxer (through PyAV) publishes H.264
    frames to a reader that listens (FFmpeg's RTSP demuxer with ``rtsp_flags=listen``), so
    the reader side runs FFmpeg's RTSP client protocol stack (DESCRIBE/SETUP/RTP over TCP)
    as a camera stream would, without an external server. The publisher retries its
    connection for up to ``connect_timeout`` seconds while the reader starts listening.
    """

    #: what the reading side passes to FFmpeg (VideoReader(options=...), --input-option)
    READER_OPTIONS = {"rtsp_flags": "listen", "rtsp_transport": "tcp"}

    def __init__(self, frames, fps: int = 30, connect_timeout: float = 10.0):
        import av

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.frames = list(frames)
        self.error: Optional[BaseException] = None

        def publish() -> None:
            import time

            h, w = self.frames[0].shape[:2]
            deadline = time.monotonic() + connect_timeout
            while True:
                # the RTSP muxer connects when it writes its header, not at open
                out = av.open(self.url, mode="w", format="rtsp", options={"rtsp_transport": "tcp"})
                st = out.add_stream("libx264", rate=fps)
                st.width, st.height, st.pix_fmt = w, h, "yuv420p"
                st.options = {"preset": "ultrafast", "tune": "zerolatency"}
                try:
                    out.start_encoding()
                    break
                except av.error.FFmpegError as exc:
                    out.close()
                    if time.monotonic() > deadline:
                        self.error = exc
                        return
                    time.sleep(0.05)
            try:
                for i, img in enumerate(self.frames):
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    frame.pts = i
                    for packet in st.encode(frame):
                        out.mux(packet)
                    time.sleep(0.5 / fps)  # roughly live pace: a live source does not burst
                for packet in st.encode():
                    out.mux(packet)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc
            finally:
                out.close()

        self.thread = threading.Thread(target=publish, daemon=True, name="rtsp-publisher")
        self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=30)
        if self.error is not None:
            raise self.error
