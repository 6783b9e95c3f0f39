"""StreamBuffers: the text and state of every output stream, spilled to one file once ended.

Threads: any. The event pump (loop thread) appends and sets states; the IO thread spills;
the GUI, the API and the CLI read. State owned: every stream's text in memory, its state, and
where its ended pieces are in the spill file, all under its own lock (`_lock`); one spill at
a time (`_spill_lock`).
"""
from __future__ import annotations

import array
import threading
from pathlib import Path
from typing import Any


class StreamBuffers:
    """Text and state of every stream, thread-safe. Appended by the event pump.

    With a `spill_path`, `spill()` (called off the loop after streams end) appends the text
    of every ended stream to that one file, in a single write, and drops it from memory; the
    stream remembers where its pieces are, and `text()` reads them back. So memory holds only
    what is streaming now, however long the session; a retried ticket's stream keeps its
    earlier attempts on disk."""

    def __init__(self, spill_path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, list[str]] = {}   # text not in the file yet
        self._len: dict[str, int] = {}
        self._state: dict[str, str] = {}
        self._spill_path = spill_path
        # stream -> its pieces in the file, flat: byte offset, bytes, characters, ... (24 bytes
        # a piece: memory grows by that per stream that ended, not by its text)
        self._pieces: dict[str, array.array] = {}
        # bytes of complete pieces in the file; a file there already (a resumed session) is
        # kept as it is and new pieces go after it
        self._file_size = spill_path.stat().st_size if spill_path and spill_path.exists() else 0
        self._spill_lock = threading.Lock()      # one spill at a time

    def append(self, stream_id: str, text: str) -> None:
        with self._lock:
            self._parts.setdefault(stream_id, []).append(text)
            self._len[stream_id] = self._len.get(stream_id, 0) + len(text)
            self._state[stream_id] = "streaming"

    def set_state(self, stream_id: str, state: str) -> None:
        with self._lock:
            self._parts.setdefault(stream_id, [])
            self._len.setdefault(stream_id, 0)
            self._state[stream_id] = state

    def spill(self) -> int:
        """Move the text of every stream that is not streaming to the file, in one write, and
        drop it from memory (any thread; disk I/O). Returns the streams moved. Nothing to do
        without a spill_path. A failed write raises and keeps the text in memory (the next
        spill writes over what it left)."""
        if self._spill_path is None:
            return 0
        with self._spill_lock:
            with self._lock:
                todo = [(sid, len(parts), "".join(parts)) for sid, parts in self._parts.items()
                        if parts and self._state.get(sid) != "streaming"]
                start = self._file_size
            if not todo:
                return 0
            blobs = [text.encode("utf-8") for _, _, text in todo]
            with open(self._spill_path, "r+b" if start else "wb") as f:
                f.seek(start)
                f.truncate()
                f.write(b"".join(blobs))
            with self._lock:
                off = start
                for (sid, k, text), blob in zip(todo, blobs):
                    self._parts[sid] = self._parts[sid][k:]      # appended while we wrote
                    self._pieces.setdefault(sid, array.array("Q")).extend(
                        (off, len(blob), len(text)))
                    off += len(blob)
                self._file_size = off
            return len(todo)

    def text(self, stream_id: str, offset: int = 0) -> str:
        with self._lock:
            if stream_id not in self._parts:
                raise KeyError(stream_id)
            parts = self._parts[stream_id]
            if len(parts) > 1:
                parts = self._parts[stream_id] = ["".join(parts)]
            tail = parts[0] if parts else ""
            flat = self._pieces.get(stream_id)
            pieces = list(zip(flat[0::3], flat[1::3], flat[2::3])) if flat else []
        out: list[str] = []
        if pieces:
            assert self._spill_path is not None
            # the file only grows; a piece's bytes never change once recorded
            with open(self._spill_path, "rb") as f:
                for off, nbytes, nchars in pieces:
                    if offset >= nchars:
                        offset -= nchars
                        continue
                    f.seek(off)
                    out.append(f.read(nbytes).decode("utf-8")[offset:])
                    offset = 0
        out.append(tail[offset:])
        return "".join(out)

    def info(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {sid: {"length": self._len.get(sid, 0), "state": self._state.get(sid, "idle")}
                    for sid in self._len}
