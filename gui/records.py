"""The GUI's small records: a comms row, a stream's display rows (`StreamView`), a notice, an
operation in flight, and the user's drafts (proposal rows, ticket rows, an approval's edit).

GUI thread only. Each record owns only its own fields.
"""
from __future__ import annotations

import concurrent.futures
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from typing import NamedTuple

from gui.reflow import Reflow
from gui.theme import WRAP_COLS
from models import ApprovalRequest, Ticket


class CommsRow(NamedTuple):
    """What the comms table shows of one entry (strings shared between rows)."""
    seq: int
    ts: float
    tier: str
    stream_id: str
    direction: str
    kind: str
    model: str
    tokens: int | None

    @classmethod
    def of(cls, e: dict[str, Any], i: int) -> CommsRow:
        def s(key: str) -> str:
            v = e.get(key)
            return sys.intern(v) if isinstance(v, str) else ""
        u = e.get("usage")
        tokens = u.get("total_tokens") if isinstance(u, dict) else None
        ts = e.get("ts")
        return cls(e.get("seq") if isinstance(e.get("seq"), int) else i + 1,
                   float(ts) if isinstance(ts, (int, float)) else 0.0,
                   s("tier"), s("stream_id"), s("direction"), s("kind"), s("model"),
                   int(tokens) if isinstance(tokens, (int, float)) else None)


class StreamView:
    """One stream's text as display rows, extended incrementally as chunks arrive: never
    re-split per frame, so a multi-megabyte stream costs the same per frame as a short one."""

    __slots__ = ("stream_id", "rows", "state", "chars", "follow", "markdown", "_md_cache",
                 "last_chunk_at", "at_bottom", "jump_to_end", "unloaded", "reflow")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.rows: list[str] = [""]
        self.state = "idle"
        self.chars = 0
        self.follow = True          # auto-scroll while at the bottom
        self.at_bottom = True
        self.jump_to_end = False
        self.markdown = False
        self._md_cache: tuple[int, str] = (-1, "")
        self.last_chunk_at = 0.0
        self.unloaded = False       # rows dropped; the engine has the text (see unload)
        self.reflow = Reflow()      # the rows as display lines at the pane's width

    def unload(self) -> None:
        """Drop the rows of a stream nobody is looking at; `load()` brings them back from the
        engine. Chunks fed meanwhile are only counted."""
        self.rows = [""]
        self._md_cache = (-1, "")
        self.unloaded = True

    def load(self, text: str) -> None:
        """`text`: the engine's text of this stream, which may already hold chunks the GUI has
        not drained yet: only the `chars` fed so far are taken, the rest arrives as chunks."""
        seen, self.chars, self.rows, self.unloaded = self.chars, 0, [""], False
        self.feed(text[:seen])

    def feed(self, text: str) -> None:
        if not text:
            return
        self.chars += len(text)
        if self.unloaded:
            return
        if "\t" in text or "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
        parts = text.split("\n")
        rows = self.rows
        rows[-1] += parts[0]
        if len(rows[-1]) > WRAP_COLS:
            self._wrap_last()
        for p in parts[1:]:
            rows.append(p)
            if len(p) > WRAP_COLS:
                self._wrap_last()

    def _wrap_last(self) -> None:
        rows = self.rows
        line = rows.pop()
        while len(line) > WRAP_COLS:
            cut = line.rfind(" ", WRAP_COLS // 2, WRAP_COLS)
            cut = cut + 1 if cut > 0 else WRAP_COLS
            rows.append(line[:cut])
            line = line[cut:]
        rows.append(line)

    @property
    def line_count(self) -> int:
        return len(self.rows) if self.rows[-1] else len(self.rows) - 1

    def text(self) -> str:
        """The whole text (joined on demand, cached by length: for markdown and copy)."""
        if self._md_cache[0] != self.chars:
            self._md_cache = (self.chars, "\n".join(self.rows))
        return self._md_cache[1]


@dataclass
class Notice:
    level: str          # "error" | "warning" | "info"
    message: str
    panel: str = ""     # the window it belongs to ("" = global)
    ts: float = field(default_factory=time.time)
    dismissed: bool = False


@dataclass
class Op:
    """Work in flight: a Future polled each frame."""
    label: str
    future: concurrent.futures.Future
    panel: str = ""
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class ProposalRow:
    title: str
    goal: str
    criteria: str      # one per line


@dataclass
class TicketRow:
    id: str
    description: str
    depends: str       # comma separated
    files: str         # comma separated
    original: Ticket | None = None


@dataclass
class TicketDraft:
    track_id: str
    rows: list[TicketRow]
    base: str          # signature of the tickets the draft was made from
    dirty: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ApprovalEdit:
    request: ApprovalRequest
    fields: dict[str, str]
    original: dict[str, str]
    error: str = ""
    reason: str = ""
    preview: str = ""
    preview_of: dict[str, str] | None = None   # the fields the preview shows (None: as requested)
    focus_reason: bool = False


@dataclass
class PathPrompt:
    """A path the person is choosing: "save" (an export) or "workspace" (File → Open)."""
    kind: str
    title: str
    path: str
    on_choose: Callable[[Any], None] | None = None
    error: str = ""
    replace_ok: bool = False
    native: Any = None       # a portable_file_dialogs dialog being shown, polled each frame
