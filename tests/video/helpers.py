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
