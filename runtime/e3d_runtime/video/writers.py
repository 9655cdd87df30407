"""Outputs: JSONL (resumable), CSV, annotated MP4, and a small H.264 encoder.

Nothing half-written ends up under a final name: JSONL records go to
``<path>.partial`` (flushed per record, so an interrupted folder run resumes from it)
and are renamed to ``<path>`` when the run completes; CSV and MP4 are written through
:func:`e3d_runtime.atomic.atomic_path`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..atomic import atomic_path, atomic_write_text, output_lock
from ..errors import ConfigError, VideoError, require


def _av():
    return require("av", "video", "encoding video")


def encode_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 30.0, *,
                 times: Optional[Sequence[float]] = None, codec: str = "libx264",
                 pix_fmt: Optional[str] = None, rotation: Optional[int] = None,
                 hflip: bool = False, vflip: bool = False,
                 options: Optional[Dict[str, str]] = None,
                 container_options: Optional[Dict[str, str]] = None) -> Path:
    """Encode RGB ``(H, W, 3)`` or grayscale ``(H, W)`` uint8 frames to a video file.

    ``times`` (seconds, increasing) gives each frame its own presentation time, which
    makes a variable-frame-rate file; otherwise frames are ``1/fps`` apart.
    ``rotation`` (counter-clockwise degrees) and ``hflip`` / ``vflip`` (mirrors applied after
    the rotation) are stored as display-matrix metadata; a player shows the frames
    transformed that way.
    ``options`` go to the encoder (e.g. ``{"crf": "28"}``), ``container_options`` to the
    muxer (e.g. ``{"movflags": "faststart"}`` for MP4 that streams over HTTP).
    ``pix_fmt`` defaults to ``gray`` for 2-D frames, ``yuv444p`` for odd sizes (4:2:0
    needs even ones) and ``yuv420p`` otherwise.
    """
    av = _av()
    path = Path(path)
    it = iter(frames)
    try:
        first = np.asarray(next(it))
    except StopIteration:
        raise VideoError(f"{path}: no frames to encode") from None
    gray = first.ndim == 2
    h, w = first.shape[:2]
    if pix_fmt is None:
        pix_fmt = "gray" if gray else ("yuv444p" if (h % 2 or w % 2) else "yuv420p")
    # a fine time base lets variable-frame-rate timestamps survive exactly enough
    time_base = Fraction(1, 90000)
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", options=dict(container_options or {}))
        try:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            if options:
                stream.options = dict(options)
            if rotation or hflip or vflip:
                stream.set_display_rotation(int(rotation or 0), hflip=bool(hflip), vflip=bool(vflip))

            def frames_all() -> Iterator[np.ndarray]:
                yield first
                yield from it

            for i, img in enumerate(frames_all()):
                img = np.ascontiguousarray(img, dtype=np.uint8)
                if img.shape[:2] != (h, w):
                    raise VideoError(f"{path}: frame {i} is {img.shape[:2]}, expected {(h, w)}")
                frame = av.VideoFrame.from_ndarray(img, format="gray" if gray else "rgb24")
                t = times[i] if times is not None else i / fps
                frame.pts = int(round(t / time_base))
                frame.time_base = time_base
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return path


# ---- records ------------------------------------------------------------------
class JsonlWriter:
    """One JSON record per line; resumable.

    ``resume=True`` keeps the records an interrupted run left in ``<path>.partial``
    (and those of a finished ``<path>``), so :meth:`done_sources` lets a folder run
    skip inputs already classified. :meth:`close` renames the partial file into place.
    The writer holds ``path``'s lock (:func:`e3d_runtime.atomic.output_lock`) until
    :meth:`close` or :meth:`abort`: a second run on the same file fails at once instead
    of interleaving records into one partial file.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = True):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._held = contextlib.ExitStack()
        self._held.enter_context(output_lock(self.path, what="JSONL file"))
        self.records: List[Dict[str, Any]] = []
        try:
            if resume:
                for src in (self.partial, self.path):
                    if src.is_file():
                        self.records = _read_jsonl(src)
                        break
            # rewrite what we kept (drops a torn last line of a killed run)
            self._fh = open(self.partial, "w", encoding="utf-8")
            for rec in self.records:
                self._fh.write(json.dumps(rec, default=_json_default) + "\n")
            self._fh.flush()
        except BaseException:
            self._held.close()
            raise

    def done_sources(self) -> set:
        return {r.get("source") for r in self.records if r.get("complete", True)}

    def write(self, record: Dict[str, Any]) -> None:
        self.records.append(record)
        self._fh.write(json.dumps(record, default=_json_default) + "\n")
        self._fh.flush()

    def write_many(self, records: Iterable[Dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> Path:
        if self._fh is not None and not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self.partial, self.path)
        self._held.close()
        return self.path

    def abort(self) -> None:
        """Keep the partial file for a later resume, do not publish it."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        self._held.close()


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a JSONL file (not UTF-8 text); cannot resume from it "
                          "(move it away or choose another --jsonl)") from None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            break  # a torn last line from an interrupted write
        if not isinstance(rec, dict):
            break
        out.append(rec)
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


CSV_FIELDS = ("source", "kind", "window", "start_time", "end_time", "label", "score",
              "top_labels", "top_scores", "error")


def write_csv(path: str | os.PathLike, records: Iterable[Dict[str, Any]]) -> Path:
    """One row per record; top-k lists joined with ``|``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        top = r.get("top") or []
        row = dict(r)
        row["label"] = top[0]["label"] if top else ""
        row["score"] = f"{top[0]['score']:.6f}" if top else ""
        row["top_labels"] = "|".join(str(t["label"]) for t in top)
        row["top_scores"] = "|".join(f"{t['score']:.6f}" for t in top)
        writer.writerow(row)
    return atomic_write_text(path, buf.getvalue())


# ---- annotated video ------------------------------------------------------------
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_label(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with ``text`` on a dark band across the top (a copy)."""
    require("PIL", "video", "drawing labels on video frames")
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    size = max(10, h // 18)
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    draw.rectangle([0, 0, w, size + 8], fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255), font=_font(size))
    return np.asarray(pil)


def annotate_video(source: str | os.PathLike, dest: str | os.PathLike,
                   windows: Sequence[Dict[str, Any]], fps: Optional[float] = None) -> Path:
    """Re-encode ``source`` to ``dest`` with each frame labelled by the latest window
    whose end time it has reached (what a live overlay would show)."""
    from .decode import VideoReader

    spans = sorted(((float(w["end_time"]), w) for w in windows if w.get("top")), key=lambda x: x[0])
    ends = np.asarray([e for e, _ in spans])

    with VideoReader(source) as reader:
        rate = fps or reader.info.fps or 30.0
        times: List[float] = []

        def labelled() -> Iterator[np.ndarray]:
            for fr in reader.frames():
                i = int(np.searchsorted(ends, fr.time + 1e-9, side="right")) - 1
                text = ""
                if i >= 0:
                    top = spans[i][1]["top"][0]
                    text = f"{top['label']}  {top['score']:.2f}  t={fr.time:.1f}s"
                times.append(fr.time)
                img = fr.image
                if img.shape[0] % 2 or img.shape[1] % 2:  # yuv420p needs even sizes
                    img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]
                yield draw_label(img, text) if text else img

        # times[i] is appended before frame i is yielded, so VFR timing is kept
        return encode_video(dest, labelled(), fps=rate, times=times)


def check_output_path(path: Optional[str], suffixes: Tuple[str, ...], what: str) -> Optional[Path]:
    if path is None:
        return None
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ConfigError(f"{what}: expected a file ending in {'/'.join(suffixes)}, found {path!r}")
    if p.exists() and p.is_dir():
        raise ConfigError(f"{what}: {path} is a folder, expected a file")
    return p
