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
from models import ApprovalRequest, ContextSection, SpawnPayload, Ticket


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
    tool: str = ""          # the tool called, or asked about
    decision: str = ""      # an approval's answer, or how a tool call ended

    @classmethod
    def of(cls, e: dict[str, Any], i: int) -> CommsRow:
        def s(key: str) -> str:
            v = e.get(key)
            return sys.intern(v) if isinstance(v, str) else ""
        u = e.get("usage")
        tokens = u.get("total_tokens") if isinstance(u, dict) else None
        ts = e.get("ts")
        data = e.get("data") if isinstance(e.get("data"), dict) else {}
        return cls(e.get("seq") if isinstance(e.get("seq"), int) else i + 1,
                   float(ts) if isinstance(ts, (int, float)) else 0.0,
                   s("tier"), s("stream_id"), s("direction"), s("kind"), s("model"),
                   int(tokens) if isinstance(tokens, (int, float)) else None,
                   sys.intern(comms_tool(s("kind"), data)), comms_decision(s("kind"), data))


def comms_tool(kind: str, data: dict[str, Any]) -> str:
    """The tool an entry is about: a call or its result by name, an approval by what it asked
    (a shell command is `run_shell`, a spawn `spawn`), a response by the calls it made."""
    if kind in ("tool_call", "tool_result"):
        return str(data.get("name", ""))
    if kind == "approval":
        asked = data.get("requested") if isinstance(data.get("requested"), dict) else {}
        what = asked.get("kind", data.get("kind", ""))
        return str(asked.get("tool", "")) if what == "tool" else "run_shell" if what == "shell" \
            else str(what or "")
    if kind == "response" and isinstance(data.get("tool_calls"), list):
        return ", ".join(str(c.get("name", "")) for c in data["tool_calls"] if isinstance(c, dict))
    return ""


def comms_decision(kind: str, data: dict[str, Any]) -> str:
    """What was decided: an approval's answer (with its reason, and whether the person edited
    it), or how a tool call ended (ok, the exit code, rejected, refused, failed)."""
    if kind == "approval":
        if data.get("approved"):
            word = "auto-approved" if data.get("source") == "auto" else "approved"
            return word + (" with edits" if data.get("edited") else "")
        reason = str(data.get("reason") or "")
        return "rejected" + (f": {reason}" if reason else "")
    if kind == "tool_result":
        r = data.get("result") if isinstance(data.get("result"), dict) else {}
        if r.get("rejected"):
            return "rejected"
        if r.get("denied"):
            return "refused by a rule"
        code = r.get("exit_code")
        if not r.get("ok", True):
            return f"exit {code}" if code is not None else "failed"
        return f"ok (exit {code})" if code is not None else "ok"
    return ""


class StreamView:
    """One stream's text as display rows, extended incrementally as chunks arrive: never
    re-split per frame, so a multi-megabyte stream costs the same per frame as a short one."""

    __slots__ = ("stream_id", "rows", "state", "chars", "follow", "markdown", "_md_cache",
                 "_md_view", "last_chunk_at", "at_bottom", "jump_to_end", "unloaded", "reflow")

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
        self._md_view: tuple[int, str] = (-1, "")
        self.last_chunk_at = 0.0
        self.unloaded = False       # rows dropped; the engine has the text (see unload)
        self.reflow = Reflow()      # the rows as display lines at the pane's width

    def unload(self) -> None:
        """Drop the rows of a stream nobody is looking at; `load()` brings them back from the
        engine. Chunks fed meanwhile are only counted."""
        self.rows = [""]
        self._md_cache = (-1, "")
        self._md_view = (-1, "")
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

    def markdown_text(self) -> str:
        """The text for Markdown mode, every line break kept: Markdown joins lines into one
        paragraph, and a stream is lines (issue 20, defect 13). A line ending in two spaces is
        a hard break; inside a code fence lines stay as they are. Cached by length."""
        if self._md_view[0] != self.chars:
            out, fence = [], False
            for ln in self.text().split("\n"):
                if ln.lstrip().startswith(("```", "~~~")):
                    fence = not fence
                    out.append(ln)
                else:
                    out.append(ln if fence or not ln.strip() else ln + "  ")
            self._md_view = (self.chars, "\n".join(out))
        return self._md_view[1]

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
    # a spawn's context sections (issue 19): the person's working copy, and the request's
    sections: list[ContextSection] = field(default_factory=list)
    sections_original: list[ContextSection] = field(default_factory=list)
    add_path: str = ""                         # the "add a file" path input

    def __post_init__(self) -> None:
        p = self.request.payload
        if isinstance(p, SpawnPayload) and not self.sections_original:
            self.sections_original = list(p.sections)
            self.sections = list(p.sections)

    @property
    def edited(self) -> bool:
        return self.fields != self.original or self.sections != self.sections_original



@dataclass
class DiffPick:
    """Which file of a shown diff is selected, and a file to scroll the diff to next frame."""
    selected: str = ""
    jump_to: str | None = None
    parsed: tuple = ()        # (the diff text, its lines, file starts, per-file counts)


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
