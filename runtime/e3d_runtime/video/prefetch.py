"""Run a producer (decode + preprocess) on a background thread, ahead of its consumer.

PyAV, numpy's BLAS and the runtimes release the GIL while they work, so decoding and
preprocessing the next windows overlaps inference on the current ones.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Tuple


def prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` results ahead of the consumer.

    Exceptions raised by the producer are re-raised in the consumer at the same point
    of the sequence; closing the consumer stops the producer.
    """
    q: "queue.Queue[Tuple[str, Any]]" = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(("error", exc))

    worker = threading.Thread(target=produce, daemon=True, name="e3d-decode")
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        while not q.empty():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        worker.join(timeout=5)
