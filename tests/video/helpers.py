"""Test assets: real videos encoded with PyAV, a real HTTP server and a real RTSP server on
127.0.0.1."""
from __future__ import annotations

import http.server
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

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
    """A real RTSP session on 127.0.0.1: FFmpeg's RTSP muxer (through PyAV, in a child
    process) publishes H.264 frames to a reader that listens (FFmpeg's RTSP demuxer with
    ``rtsp_flags=listen``), so the reader side runs FFmpeg's RTSP client protocol stack
    (DESCRIBE/SETUP/RTP over TCP) as a camera stream would, without an external server. The
    publisher retries its connection for up to ``connect_timeout`` seconds while the reader
    starts listening.
    """

    #: what the reading side passes to FFmpeg (VideoReader(options=...), --input-option)
    READER_OPTIONS = {"rtsp_flags": "listen", "rtsp_transport": "tcp"}

    def __init__(self, frames, fps: int = 30, connect_timeout: float = 10.0):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.proc, self._frames_file = _start_publisher(self.url, frames, fps, gop=fps,
                                                        connect_timeout=connect_timeout)

    def join(self) -> None:
        try:
            _, err = self.proc.communicate(timeout=30)
        finally:
            os.unlink(self._frames_file)
        if self.proc.returncode != 0:
            raise RuntimeError(f"RTSP publisher exited with {self.proc.returncode}: "
                               f"{err.decode(errors='replace')[-2000:]}")


def counted_frames(n: int, h: int, w: int) -> Iterator[np.ndarray]:
    """Like :func:`numbered_frames`, but frame i stays identifiable up to i = 1727: three
    vertical bands carry the base-12 digits of i as gray levels 10 + 20*digit (least
    significant on the left). Make ``w`` a multiple of 48 (bands on macroblock edges)."""
    b = w // 3
    for i in range(n):
        img = np.empty((h, w, 3), np.uint8)
        for k in range(3):
            img[:, k * b:(k + 1) * b] = 10 + 20 * (i // 12 ** k % 12)
        yield img


def counted_number(image: np.ndarray) -> int:
    """The i of a :func:`counted_frames` image (after lossy coding)."""
    b = image.shape[1] // 3
    return sum(frame_number(image[:, k * b + 2:(k + 1) * b - 2]) * 12 ** k for k in range(3))


# The RTSP publisher of both helpers, a separate process: FFmpeg's RTSP muxer through PyAV
# (PyAV holds the GIL while the muxer connects and waits for the server's replies, so it
# cannot share a process with a server written in Python). H.264 with SPS/PPS before every
# keyframe and a short GOP, so a reader can join mid-stream; frames at live pace. It retries
# the connection until ``connect_timeout`` (a listening reader may not be up yet) and, with
# ``wait_go``, starts sending only when stdin says so.
_RTSP_PUBLISHER = r"""
import sys, time
import av, numpy as np
url, path, fps, gop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
connect_timeout, wait_go = float(sys.argv[5]), sys.argv[6] == "1"
frames = np.load(path)
deadline = time.monotonic() + connect_timeout
while True:
    out = av.open(url, mode="w", format="rtsp", options={"rtsp_transport": "tcp"})
    st = out.add_stream("libx264", rate=fps)
    st.height, st.width = frames.shape[1:3]
    st.pix_fmt = "yuv420p"
    st.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(gop),
                  "x264-params": f"repeat-headers=1:keyint={gop}:min-keyint={gop}"}
    try:
        out.start_encoding()  # connects: OPTIONS, ANNOUNCE (SDP), SETUP, RECORD
        break
    except av.error.FFmpegError:
        out.close()
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
if wait_go:
    sys.stdin.readline()
start = time.monotonic()
for i, img in enumerate(frames):
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    frame.pts = i
    for packet in st.encode(frame):
        out.mux(packet)
    delay = start + (i + 1) / fps - time.monotonic()
    if delay > 0:
        time.sleep(delay)
for packet in st.encode():
    out.mux(packet)
out.close()  # TEARDOWN
"""


def _start_publisher(url: str, frames, fps: int, gop: int, *, connect_timeout: float = 0.0,
                     wait_go: bool = False) -> Tuple[subprocess.Popen, str]:
    """(process, frames file) of :data:`_RTSP_PUBLISHER` publishing ``frames`` to ``url``."""
    import tempfile

    fd, frames_file = tempfile.mkstemp(suffix=".npy", prefix="rtsp-frames-")
    os.close(fd)
    np.save(frames_file, np.stack(list(frames)))
    proc = subprocess.Popen(
        [sys.executable, "-c", _RTSP_PUBLISHER, url, frames_file, str(fps), str(gop),
         str(connect_timeout), "1" if wait_go else "0"],
        stdin=subprocess.PIPE if wait_go else subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    return proc, frames_file


class _RTSPConnection:
    """One client connection: RTSP requests and RTP-interleaved ``$`` frames on one socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.send_lock = threading.Lock()
        self.role: Optional[str] = None  # "publisher" | "reader" | "playing"
        self.session: Optional[str] = None
        self.channels: dict = {}  # publisher: RTP channel -> track; reader: track -> RTP channel
        self.started = False      # a playing reader gets frames from a keyframe on
        self.session_number = -1  # its place in RTSPServer.first_frames
        self.frames_sent = 0
        self.closed = False
        self.stalled = False      # connected, but nothing is forwarded to it any more

    def read_message(self):
        """``("data", channel, payload)`` or ``("request", method, url, headers, body)``."""
        while True:
            if self.buf[:1] == b"$":
                if len(self.buf) >= 4:
                    n = int.from_bytes(self.buf[2:4], "big")
                    if len(self.buf) >= 4 + n:
                        channel, payload = self.buf[1], bytes(self.buf[4:4 + n])
                        del self.buf[:4 + n]
                        return ("data", channel, payload)
            else:
                while self.buf[:2] == b"\r\n":
                    del self.buf[:2]
                end = self.buf.find(b"\r\n\r\n")
                if end >= 0:
                    lines = self.buf[:end].decode("latin-1").split("\r\n")
                    headers = {}
                    for line in lines[1:]:
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                    length = int(headers.get("content-length") or 0)
                    if len(self.buf) >= end + 4 + length:
                        body = bytes(self.buf[end + 4:end + 4 + length])
                        del self.buf[:end + 4 + length]
                        method, url = (lines[0].split() + ["", ""])[:2]
                        return ("request", method, url, headers, body)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.sock.sendall(data)

    def reply(self, cseq: Optional[str], code: int = 200, reason: str = "OK",
              headers: Optional[dict] = None, body: bytes = b"") -> None:
        lines = [f"RTSP/1.0 {code} {reason}"]
        if cseq is not None:
            lines.append(f"CSeq: {cseq}")  # echoed: FFmpeg pairs replies with requests by it
        lines.append("Server: e3d-zoo-test-rtsp")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def shutdown(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _rtp_payload(packet: bytes) -> Tuple[bool, bytes]:
    """(marker bit, payload) of an RTP packet (RFC 3550)."""
    if len(packet) < 12:
        return False, b""
    offset = 12 + 4 * (packet[0] & 0x0F)  # CSRCs
    if packet[0] & 0x10 and len(packet) >= offset + 4:  # header extension
        offset += 4 + 4 * int.from_bytes(packet[offset + 2:offset + 4], "big")
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)  # padding
    return bool(packet[1] & 0x80), packet[offset:end]


def _h264_is_key(payload: bytes) -> bool:
    """Whether an RTP H.264 payload (RFC 6184) starts an SPS or IDR NAL unit."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal == 24:  # STAP-A: (16-bit size, NAL unit) repeated
        i = 1
        while i + 2 < len(payload):
            if payload[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + int.from_bytes(payload[i:i + 2], "big")
        return False
    if nal == 28:  # FU-A: the start fragment names the NAL type
        return len(payload) > 1 and bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return nal in (5, 7)


class RTSPServer:
    """A small real RTSP 1.0 server on 127.0.0.1 relaying one live H.264 stream, as a
    camera or mediamtx serves it: readers *pull* with FFmpeg's ordinary RTSP client
    (OPTIONS / DESCRIBE / SETUP / PLAY / TEARDOWN, RTP interleaved over TCP, RFC 2326
    §10.12), so ``VideoReader(server.url, options=RTSPServer.READER_OPTIONS)`` reads it
    as it would read a camera URL.

    The stream comes from FFmpeg's RTSP muxer (PyAV, in a child process) publishing to the
    server with ANNOUNCE (its SDP) / SETUP / RECORD. The server answers DESCRIBE with that
    SDP and forwards the publisher's RTP packets to every playing reader, channels
    remapped to the ones the reader asked for in SETUP; RTCP from either side is dropped.
    A reader gets frames from the next keyframe on (every ``gop`` frames, SPS/PPS in
    band), so one that joins mid-stream decodes from its first frame.

    ``frames`` (uint8 RGB, (H, W, 3)) are published at ``fps``, live pace, starting when
    the first reader plays (at most ``wait_for_reader`` seconds after the publisher
    connected): the first reader sees frame 0. When the publisher ends, its readers'
    connections are closed (FFmpeg reads that as the end of the stream).

    Failures a test can cause:

    * ``drop_after=N``: the first ``drops`` reader sessions are dropped after N frames
      were forwarded to each; new sessions are served as before;
    * :meth:`drop`: drops every reader now;
    * :meth:`vanish`: stops listening (new connections are refused) and stalls every
      reader: the camera went off the network for good.

    A drop (``drop_mode``) is ``"cut"``: the server closes the connection between two
    RTP frames (``shutdown(SHUT_RDWR)``); ``"cut_mid_packet"``: it closes it inside one;
    ``"stall"``: the connection stays open and silent (a network that stopped carrying
    packets: only a read timeout notices).

    Records: ``requests`` ("METHOD url", in arrival order), ``first_frames`` (per reader
    session in PLAY order, the index of the first frame forwarded to it; None until it
    got one), ``frames_relayed``, ``dropped``; ``error`` is set when the publisher failed.
    """

    #: what the reading side passes to FFmpeg (VideoReader(options=...), --input-option)
    READER_OPTIONS = {"rtsp_transport": "tcp"}
    PATH = "/live"

    def __init__(self, frames, fps: int = 30, gop: int = 10, *, drop_after: Optional[int] = None,
                 drops: int = 1, drop_mode: str = "cut", wait_for_reader: float = 10.0,
                 describe_wait: float = 10.0):
        assert drop_mode in ("cut", "cut_mid_packet", "stall"), drop_mode
        self.frames = list(frames)
        self.fps, self.gop = fps, gop
        self.drop_after, self.drops_left, self.drop_mode = drop_after, drops, drop_mode
        self.describe_wait = describe_wait
        self.error: Optional[BaseException] = None
        self.requests: List[str] = []
        self.first_frames: List[Optional[int]] = []
        self.dropped = 0
        self._cond = threading.Condition(threading.RLock())
        self._sdp: Optional[bytes] = None
        self._ended = False       # the publisher went away
        self._tracks: List[str] = []  # a=control values of the SDP, in order
        self._au: dict = {}       # track -> RTP packets of the frame being received
        self._frame_index: dict = {}  # track -> index of the next whole frame
        self._conns: List[_RTSPConnection] = []
        self._threads: List[threading.Thread] = []
        self._closing = False
        self._session_ids = iter(range(0x5E55_0000, 0x7FFF_FFFF))
        self._proc: Optional[subprocess.Popen] = None
        self._frames_file: Optional[str] = None

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}{self.PATH}"
        self._start(self._accept_loop, "rtsp-server-accept")
        self._start(lambda: self._publish(wait_for_reader), "rtsp-server-publisher")

    # ---- threads -----------------------------------------------------------------------
    def _start(self, target, name: str) -> None:
        t = threading.Thread(target=target, daemon=True, name=name)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # the listener was closed
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # a reader that stops reading fails the relay's send after 5 s, not stalls it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 5, 0))
            conn = _RTSPConnection(sock)
            with self._cond:
                if self._closing:
                    sock.close()
                    return
                self._conns.append(conn)
            self._start(lambda: self._serve(conn), "rtsp-server-connection")

    def _publish(self, wait_for_reader: float) -> None:
        with self._cond:
            if self._closing:
                return
            proc, self._frames_file = _start_publisher(self.url, self.frames, self.fps, self.gop,
                                                       wait_go=True)
            self._proc = proc
            self._cond.wait_for(lambda: self._sdp is not None or self._closing, timeout=30)
            self._cond.wait_for(lambda: self.first_frames or self._closing, timeout=wait_for_reader)
        with proc:  # closes the pipes, waits for the process
            assert proc.stdin is not None and proc.stderr is not None
            try:
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            except OSError:  # killed by close()
                pass
            err = proc.stderr.read()
        if proc.returncode != 0 and not self._closing:
            self.error = RuntimeError(f"RTSP publisher exited with {proc.returncode}: "
                                      f"{err.decode(errors='replace')[-2000:]}")

    def _serve(self, conn: _RTSPConnection) -> None:
        try:
            while not conn.closed:
                msg = conn.read_message()
                if msg[0] == "data":
                    if conn.role == "publisher":
                        self._relay(conn, msg[1], msg[2])
                    continue  # readers' RTCP receiver reports
                _, method, url, headers, body = msg
                self.requests.append(f"{method} {url}")
                if not self._handle(conn, method, url, headers, body):
                    break
        except (EOFError, OSError):
            pass
        finally:
            self._disconnect(conn)

    # ---- RTSP ----------------------------------------------------------------------------
    def _handle(self, conn: _RTSPConnection, method: str, url: str, headers: dict,
                body: bytes) -> bool:
        cseq = headers.get("cseq")
        session = {"Session": f"{conn.session};timeout=60"} if conn.session else {}
        if method == "OPTIONS":
            conn.reply(cseq, headers={"Public": "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, "
                                                "RECORD, PAUSE, TEARDOWN, GET_PARAMETER"})
        elif method == "ANNOUNCE":
            with self._cond:
                if self._sdp is not None and not self._ended:
                    conn.reply(cseq, 455, "Method Not Valid in This State")  # one publisher
                    return True
                conn.role = "publisher"
                sdp = body.decode("latin-1")
                self._tracks = [line[len("a=control:"):].strip() for line in sdp.splitlines()
                                if line.startswith("a=control:")]
                self._sdp, self._ended, self._au, self._frame_index = body, False, {}, {}
                self._cond.notify_all()
            conn.reply(cseq)
        elif method == "DESCRIBE":
            if url.split("://", 1)[-1].partition("/")[2].rstrip("/") != self.PATH.lstrip("/"):
                conn.reply(cseq, 404, "Not Found")
                return True
            with self._cond:  # a reader that comes before the publisher waits for it
                self._cond.wait_for(lambda: (self._sdp is not None and not self._ended)
                                    or self._closing, timeout=self.describe_wait)
                sdp = None if self._ended else self._sdp
            if sdp is None:
                conn.reply(cseq, 404, "Not Found")
                return True
            conn.reply(cseq, headers={"Content-Base": self.url + "/",
                                      "Content-Type": "application/sdp"}, body=sdp)
        elif method == "SETUP":
            transport = headers.get("transport", "")
            params = dict(p.partition("=")[::2] for p in transport.split(";"))
            if "/TCP" not in transport.split(";")[0].upper() or "interleaved" not in params:
                conn.reply(cseq, 461, "Unsupported Transport")  # TCP interleaved only
                return True
            rtp = int(params["interleaved"].split("-")[0])
            track = self._track_of(url)
            if "mode" in params and "record" in params["mode"].lower():
                conn.role = "publisher"
                conn.channels[rtp] = track
            else:
                conn.role = "reader"
                conn.channels[track] = rtp
            if conn.session is None:
                conn.session = f"{next(self._session_ids):08X}"
            conn.reply(cseq, headers={"Transport": f"RTP/AVP/TCP;unicast;interleaved={rtp}-{rtp + 1}",
                                      "Session": f"{conn.session};timeout=60"})
        elif method == "RECORD":
            ok = conn.role == "publisher"
            conn.reply(cseq, *((200, "OK") if ok else (455, "Method Not Valid in This State")),
                       headers=session)
        elif method == "PLAY":
            with self._cond:
                if conn.role != "reader" or self._sdp is None or self._ended:
                    conn.reply(cseq, 455, "Method Not Valid in This State", headers=session)
                    return True
                conn.reply(cseq, headers={**session, "Range": "npt=0.000-"})
                conn.role = "playing"
                conn.session_number = len(self.first_frames)
                self.first_frames.append(None)
                self._cond.notify_all()  # the publisher starts with the first reader
        elif method in ("GET_PARAMETER", "SET_PARAMETER", "PAUSE"):
            conn.reply(cseq, headers=session)  # keep-alives
        elif method == "TEARDOWN":
            conn.reply(cseq, headers=session)
            return False
        else:
            conn.reply(cseq, 501, "Not Implemented")
        return True

    def _track_of(self, url: str) -> int:
        for i, control in enumerate(self._tracks):
            if url.rstrip("/").endswith("/" + control.rsplit("/", 1)[-1]):
                return i
        return 0

    # ---- RTP relay -----------------------------------------------------------------------
    def _relay(self, publisher: _RTSPConnection, channel: int, packet: bytes) -> None:
        track = publisher.channels.get(channel)
        if track is None:
            return  # RTCP sender reports (odd channels)
        au = self._au.setdefault(track, [])
        au.append(packet)
        if not _rtp_payload(packet)[0]:
            return
        # the marker bit closes a frame (access unit): forward it whole
        self._au[track] = []
        index = self._frame_index.get(track, 0)
        self._frame_index[track] = index + 1
        key = any(_h264_is_key(_rtp_payload(p)[1]) for p in au)
        framed = [len(p).to_bytes(2, "big") + p for p in au]
        with self._cond:
            readers = [c for c in self._conns if c.role == "playing" and not c.closed
                       and not c.stalled and track in c.channels and (c.started or key)]
            for conn in readers:
                if not conn.started:
                    conn.started = True
                    self.first_frames[conn.session_number] = index
                # "$", the reader's channel for this track, 16-bit length, RTP packet
                channel = bytes([conn.channels[track]])
                try:
                    conn.send(b"".join(b"$" + channel + f for f in framed))
                except OSError:
                    conn.shutdown()
                    continue
                conn.frames_sent += 1
                if (self.drop_after is not None and self.drops_left > 0
                        and conn.frames_sent >= self.drop_after):
                    self.drops_left -= 1
                    self._drop(conn)

    def _drop(self, conn: _RTSPConnection, mode: Optional[str] = None) -> None:
        mode = mode or self.drop_mode
        self.dropped += 1
        if mode == "stall":
            conn.stalled = True
            return
        if mode == "cut_mid_packet":
            try:  # a "$" frame announced as 1000 bytes, cut after 10
                conn.send(b"$" + bytes([next(iter(conn.channels.values()), 0)])
                          + (1000).to_bytes(2, "big") + bytes(10))
            except OSError:
                pass
        conn.shutdown()

    def _disconnect(self, conn: _RTSPConnection) -> None:
        conn.shutdown()
        conn.sock.close()
        with self._cond:
            if conn in self._conns:
                self._conns.remove(conn)
            if conn.role == "publisher":  # the stream ended: so do its readers' sessions
                self._ended = True
                for other in self._conns:
                    if other.role in ("reader", "playing"):
                        other.shutdown()
                self._cond.notify_all()

    # ---- failures, teardown ----------------------------------------------------------------
    @property
    def frames_relayed(self) -> int:
        """Whole frames the publisher has sent so far (of its first track)."""
        return self._frame_index.get(0, 0)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the publisher has announced the stream (readers then open quickly)."""
        with self._cond:
            self._cond.wait_for(lambda: self._sdp is not None or self.error is not None,
                                timeout=timeout)
        if self._sdp is None:
            raise RuntimeError(f"RTSP publisher did not connect: {self.error}")

    def _readers(self) -> List[_RTSPConnection]:
        # no lock: the relay may hold it while it writes to a reader that stopped reading
        return [c for c in list(self._conns) if c.role in ("reader", "playing") and not c.closed]

    def drop(self, mode: Optional[str] = None) -> int:
        """Drop every connected reader now (``drop_mode`` unless ``mode``); how many."""
        readers = self._readers()
        for conn in readers:
            self._drop(conn, mode)
        return len(readers)

    def _close_listener(self) -> None:
        try:  # shutdown wakes the accept() blocked in the accept thread; close alone does not
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def vanish(self) -> None:
        """Gone for good: new connections are refused, connected readers hear nothing more."""
        self._close_listener()
        for conn in self._readers():
            conn.stalled = True

    def close(self) -> None:
        self._closing = True
        self._close_listener()
        for conn in list(self._conns):  # unblocks every thread (the relay may hold the lock)
            conn.shutdown()
        with self._cond:
            self._cond.notify_all()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        for t in list(self._threads):
            t.join(timeout=10)
        for conn in list(self._conns):
            conn.sock.close()
        if self._frames_file:
            try:
                os.unlink(self._frames_file)
            except OSError:
                pass

    def __enter__(self) -> "RTSPServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
