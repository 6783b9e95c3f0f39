"""The `conductor/` folder on disk: tracks in the Gemini CLI Conductor format, and settings.

We read and write exactly the layout of the Conductor extension, so a Conductor user can
open what Clutch writes and Clutch can open their projects:

    <workspace>/conductor/
        product.md, tech-stack.md, workflow.md, index.md   project notes (created only if absent)
        tracks.md                                           the registry
        tracks/<track_id>/
            spec.md  plan.md  metadata.json  index.md       the Conductor files
            state.toml                                      ours: what the format has no place for
    <workspace>/.clutch/                                    git-ignored ("*"): config.toml, sessions/

Which file wins on load:
- The track folders are the truth for which tracks exist; tracks.md only lends titles and
  status to folders that lack them.
- plan.md is the truth for which tickets exist, their order, phase and text (a user may edit
  it by hand). state.toml is the truth for everything the format cannot hold (dependencies,
  retries, failures, ...). A ticket ticked [x] in plan.md, or completed in state.toml, is
  completed (state.toml is written before plan.md, so either may be the newer one).
- Text we wrote verbatim into state.toml (goal, criteria, descriptions, phase) is used
  as long as the markdown still says what we rendered from it; when the user edited the
  markdown, the edit wins.

Nothing here raises on bad input while loading: each problem becomes a LoadProblem naming
the file (and line) and the rest loads. Nothing is thrown away: a corrupt file is copied
aside (`<name>.bad-<UTC time>`) before we overwrite it.
"""
from __future__ import annotations

import collections
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
import threading
import tomllib
import typing
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models import Settings, Ticket, Track, TrackStatus

__all__ = ("StoreError", "TrackExistsError", "LoadProblem", "ConductorStore")


# ---------------------------------------------------------------------------------------------
# Errors and problems
# ---------------------------------------------------------------------------------------------

class StoreError(Exception):
    """A store operation failed; the message names the file and what went wrong."""


class TrackExistsError(StoreError):
    """create_track() on a track whose folder already exists."""


@dataclass
class LoadProblem:
    """Something wrong in a file we loaded anyway: shown to the user, never fatal."""
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


# ---------------------------------------------------------------------------------------------
# Constants (immutable)
# ---------------------------------------------------------------------------------------------

STATE_FORMAT = 1
DEFAULT_PHASE = "Implementation"

_TRACK_STATUSES = frozenset(typing.get_args(TrackStatus))

# plan.md marker per ticket status; anything else is written "[ ]" (state.toml keeps the detail)
_TICKET_MARK = MappingProxyType({"completed": "x", "in_progress": "~"})
_MARK_STATUS = MappingProxyType({" ": "todo", "~": "in_progress", "x": "completed", "X": "completed"})
# metadata.json knows new / in_progress / completed / cancelled
_META_STATUS = MappingProxyType({
    "new": "new", "planned": "new", "completed": "completed", "cancelled": "cancelled",
    "in_progress": "in_progress", "paused": "in_progress", "failed": "in_progress",
    "needs_attention": "in_progress",
})
# tracks.md: [ ] new, [~] in progress, [x] closed (completed, or cancelled: Conductor's
# "implement" picks the first track not marked [x], and a cancelled one must not be picked)
_REGISTRY_MARK = MappingProxyType({"new": " ", "planned": " ", "completed": "x", "cancelled": "x"})
_REGISTRY_STATUS = MappingProxyType({" ": "new", "~": "in_progress", "x": "completed", "X": "completed"})

_STOP_WORDS = frozenset({"a", "an", "the", "and", "or", "of", "to", "for", "in", "on", "with",
                         "into", "from", "by", "at", "as", "is", "be"})
_SECRET_NAMES = frozenset({"api_key", "apikey", "token", "secret", "password"})
_SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password", "apikey")

REGISTRY_HEADER = ("# Project Tracks\n\nThis file tracks all major tracks for the project. "
                   "Each track has its own detailed plan in its respective folder.\n")

_NOTES_FILES = MappingProxyType({
    "product.md": "# Product Definition\n\n"
                  "_Describe the product here: who it is for, what it does, and its goals._\n",
    "tech-stack.md": "# Tech Stack\n\n"
                     "_List the languages, frameworks, tools and services this project uses._\n",
    "workflow.md": "# Project Workflow\n\n"
                   "## Task Workflow\n\n"
                   "1. Tasks are taken from a track's `plan.md`, in order, respecting dependencies.\n"
                   "2. A task in progress is marked `[~]`; a finished one `[x]`, with the short "
                   "SHA of its commit appended.\n"
                   "3. A track's status is kept in `tracks.md`: `[ ]` new, `[~]` in progress, "
                   "`[x]` done.\n",
    "index.md": "# Project Context\n\n"
                "## Definition\n\n"
                "- [Product Definition](./product.md)\n"
                "- [Tech Stack](./tech-stack.md)\n\n"
                "## Workflow\n\n"
                "- [Workflow](./workflow.md)\n\n"
                "## Management\n\n"
                "- [Tracks Registry](./tracks.md)\n"
                "- [Tracks Directory](./tracks/)\n",
})

# --- plan.md ---
# "- [ ] text", "* [x] text", "+ [~] text"; one marker character at most (a markdown link
# "- [Spec](./spec.md)" is not a task)
_TASK_LINE_RE = re.compile(r"^(\s*)[-*+]\s+\[([^\]]?)\](?!\()\s*(.*)$")
_TASK_PREFIX_RE = re.compile(r"^\*{0,2}Task\*{0,2}\s*:\*{0,2}\s*", re.IGNORECASE)
_ID_PATTERN = r"[A-Za-z][A-Za-z0-9_]*-\d+(?:[.-][A-Za-z0-9]+)*"
_ID_HEAD_RE = re.compile(rf"^({_ID_PATTERN})(?::|(?=\s)|$)\s*")
_ID_FULL_RE = re.compile(_ID_PATTERN)
_EXPLICIT_ID_RE = re.compile(r"^\[id:\s*([^\]\n]+?)\s*\]\s*")
_SHA_TAIL_RE = re.compile(r"(?:^|\s+)(?:\[([0-9a-fA-F]{7,40})\]|`([0-9a-fA-F]{7,40})`)\s*$")
_DEPS_TAIL_RE = re.compile(r"(?:^|\s+)\(\s*depends\s+on\s*:\s*([^()]*)\)\s*$", re.IGNORECASE)
_DEP_ID_OK_RE = re.compile(r"[^\s,()]+")
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_PHASE_HEAD_RE = re.compile(r"^Phase\s+(\d+)\s*(?:[:.\-\u2013\u2014]\s*(.*))?$", re.IGNORECASE)
_PLAN_TITLE_RE = re.compile(r"^(?:Implementation\s+Plan|Plan)\s*[:\-\u2013\u2014]\s*(.*)$",
                            re.IGNORECASE)
_HEX_RE = re.compile(r"[0-9a-fA-F]{7,40}")
_CHECKPOINT_RE = re.compile(r"\s*\[checkpoint:\s*([0-9a-fA-F]{7,40})\]\s*$", re.IGNORECASE)

# --- spec.md ---
_SPEC_TITLE_RE = re.compile(r"^(?:Specification|Spec|Track Specification)\s*[:\-\u2013\u2014]\s*(.*)$",
                            re.IGNORECASE)
_SECTION_NUMBER_RE = re.compile(r"^\d+(?:\.\d+)*[.)]?\s+")
_BULLET_RE = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s+(.*)$")
_OVERVIEW_NAMES = frozenset({"overview", "goal", "goals", "summary"})

# --- tracks.md ---
_REG_BULLET_RE = re.compile(r"^(\s*[-*+]\s+)\[([^\]]?)\]\s+\*\*Track:\s*(.*?)\*\*(.*)$")
_REG_HEAD_RE = re.compile(r"^(#{2,6}\s+)\[([^\]]?)\]\s+Track:\s*(.*?)\s*$")
_LINK_RE = re.compile(r"\]\(\s*<?([^)>]+?)>?\s*\)")
_LINK_TRACK_RE = re.compile(r"(?:^|/)(tracks|archive)/([^/#?]+)")

_TOML_POS_RE = re.compile(r"\(at line (\d+), column (\d+)\)")


# ---------------------------------------------------------------------------------------------
# state.toml schema
# ---------------------------------------------------------------------------------------------

class _StateTrack(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = ""
    title: str = ""
    status: TrackStatus = "new"
    type: str = "feature"
    goal: str = ""
    acceptance_criteria: list[str] = Field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""


class _StateFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: int = STATE_FORMAT
    track: _StateTrack = Field(default_factory=_StateTrack)
    tickets: list[Ticket] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _strip_blank(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, os.replace: the file is old or new, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StoreError(f"cannot write {path}: {e}") from e
        raise


def _write_if_changed(path: Path, text: str) -> bool:
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e}") from e
    _atomic_write_bytes(path, data)
    return True


def _write_if_absent(path: Path, text: str) -> bool:
    if path.exists():
        return False
    _atomic_write_bytes(path, text.encode("utf-8"))
    return True


def _aside_path(path: Path) -> Path:
    base = f"{path.name}.bad-{_stamp()}"
    cand = path.with_name(base)
    n = 2
    while cand.exists():
        cand = path.with_name(f"{base}-{n}")
        n += 1
    return cand


def _copy_aside(path: Path) -> Path:
    dest = _aside_path(path)
    try:
        shutil.copy2(path, dest)
    except OSError as e:
        raise StoreError(f"cannot keep a copy of {path} as {dest} before overwriting it: {e}") from e
    return dest


def _shortname(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_title.lower())
    words = [w for w in words if w not in _STOP_WORDS] or words
    out = ""
    for w in words[:4]:
        cand = f"{out}_{w}" if out else w
        if len(cand) > 30:
            break
        out = cand
    if not out and words:
        out = words[0][:30]
    return out or "track"


def _id_prefix(track_id: str) -> str:
    """"health_endpoint_20261124" -> "HE": the prefix of generated ticket ids."""
    core = re.sub(r"_\d{8}(?:_\d+)?$", "", track_id)
    core = re.sub(r"^\d{8}_", "", core)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", core) if w and w[0].isascii() and w[0].isalpha()]
    return "".join(w[0].upper() for w in words[:4]) or "T"


def _date_from_track_id(track_id: str) -> str:
    m = re.search(r"(?:^|_)(\d{4})(\d{2})(\d{2})(?:_|$)", track_id)
    if not m:
        return ""
    try:
        d = _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return ""
    return f"{d.isoformat()}T00:00:00Z"


def _short_sha(sha: str) -> str:
    s = sha.strip()
    return s[:7] if _HEX_RE.fullmatch(s) else ""


def _phase_label(phase: str) -> str:
    return _one_line(phase) or DEFAULT_PHASE


def _format_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(top level)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _check_track_id(track_id: str) -> None:
    if (not isinstance(track_id, str) or not track_id.strip() or track_id in (".", "..")
            or track_id.startswith(".") or any(c in track_id for c in "/\\\0")
            or track_id != track_id.strip()):
        raise StoreError(f"invalid track id {track_id!r}: it must be a plain folder name "
                         f"(no slashes, not starting with '.')")


# ---------------------------------------------------------------------------------------------
# plan.md
# ---------------------------------------------------------------------------------------------

@dataclass
class _PlanTask:
    line: int
    indent: int
    marker: str
    status: str
    explicit_id: str | None
    text: str
    deps: list[str] | None
    sha: str
    phase: str


@dataclass
class _Plan:
    title: str | None = None
    phases: list[str] = field(default_factory=list)            # in order, without ""
    headings: dict[str, str] = field(default_factory=dict)     # phase -> its original heading line
    checkpoints: dict[str, str] = field(default_factory=dict)  # phase -> "[checkpoint: sha]" sha
    notes: dict[str, list[str]] = field(default_factory=lambda: {"": []})  # "" = before any phase
    tasks: list[_PlanTask] = field(default_factory=list)
    problems: list[LoadProblem] = field(default_factory=list)


def _parse_task_head(text: str) -> tuple[str | None, str, list[str] | None, str]:
    """The text after "- [ ] " -> (explicit id, first line of description, deps, sha)."""
    s = _TASK_PREFIX_RE.sub("", text.strip(), count=1)
    explicit: str | None = None
    m = _EXPLICIT_ID_RE.match(s)
    if m:
        explicit = m.group(1).strip()
        s = s[m.end():]
    else:
        m = _ID_HEAD_RE.match(s)
        if m:
            explicit = m.group(1)
            s = s[m.end():]
    deps: list[str] | None = None
    sha = ""
    for _ in range(2):  # "(depends on: ...) [sha]" in either order
        m = _SHA_TAIL_RE.search(s)
        if m and not sha:
            sha = m.group(1) or m.group(2)
            s = s[:m.start()]
        m = _DEPS_TAIL_RE.search(s)
        if m and deps is None:
            items = [x for x in re.split(r"[,\s]+", m.group(1)) if x]
            deps = [] if [x.lower() for x in items] == ["none"] else items
            s = s[:m.start()]
    return explicit, s.strip(), deps, sha


def _phase_of_heading(level: int, text: str) -> str | None:
    m = _PHASE_HEAD_RE.match(text)
    if m:
        name = (m.group(2) or "").strip()
        return name or f"Phase {m.group(1)}"
    if level == 2:
        return text.strip()
    return None


def _parse_plan(text: str, path: str) -> _Plan:
    plan = _Plan()
    phase = ""
    cur: dict[str, Any] | None = None   # the task being read: its head and continuation lines

    def close() -> None:
        nonlocal cur
        if cur is None:
            return
        t, cur = cur, None
        cont: list[str] = t["cont"]
        body = [c for c in cont if c]
        base = min((len(c) - len(c.lstrip()) for c in body), default=0)
        cont = [c[base:] if c[:base].strip() == "" else c.lstrip() for c in cont]
        explicit, first, deps, sha = _parse_task_head(t["head"])
        desc = first + ("\n" + "\n".join(cont) if cont else "")
        marker = t["marker"]
        status = _MARK_STATUS.get(marker)
        if status is None:
            plan.problems.append(LoadProblem(path, t["line"], (
                f"unrecognised task marker [{marker}] (expected [ ], [~] or [x]); read as [ ]")))
            status = "todo"
        if explicit is None and not desc.strip():
            plan.problems.append(LoadProblem(path, t["line"], "empty task; ignored"))
            return
        plan.tasks.append(_PlanTask(line=t["line"], indent=t["indent"], marker=marker, status=status,
                                    explicit_id=explicit, text=desc, deps=deps, sha=sha,
                                    phase=t["phase"]))

    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.expandtabs(4).rstrip()
        if not line:
            if cur is not None:
                cur["pending"] += 1
            else:
                plan.notes[phase].append("")
            continue
        indent = len(line) - len(line.lstrip())
        if cur is not None and indent > cur["indent"]:
            cur["cont"].extend([""] * cur["pending"])
            cur["pending"] = 0
            cur["cont"].append(line)
            continue
        close()
        hm = _HEADING_RE.match(line) if indent == 0 else None
        if hm:
            level, htext = len(hm.group(1)), hm.group(2)
            if level == 1 and plan.title is None and not plan.phases and not plan.tasks:
                tm = _PLAN_TITLE_RE.match(htext)
                plan.title = (tm.group(1) if tm else htext).strip()
                continue
            cm = _CHECKPOINT_RE.search(htext)
            name = _phase_of_heading(level, htext[:cm.start()] if cm else htext) if level in (2, 3) else None
            if name is not None:
                phase = name
                if cm:
                    plan.checkpoints[name] = cm.group(1)
                if name not in plan.notes:
                    plan.phases.append(name)
                    plan.notes[name] = []
                    plan.headings[name] = raw.rstrip()
                continue
        tm = _TASK_LINE_RE.match(line)
        if tm:
            cur = {"line": no, "indent": indent, "marker": tm.group(2), "head": tm.group(3),
                   "cont": [], "pending": 0, "phase": phase}
            continue
        plan.notes[phase].append(raw.rstrip())
    close()
    return plan


def _render_task_lines(t: Ticket, default_deps: list[str], track_id: str) -> list[str]:
    if _ID_FULL_RE.fullmatch(t.id):
        id_token = t.id
    elif "]" not in t.id and "\n" not in t.id:
        id_token = f"[id: {t.id}]"
    else:
        raise StoreError(f"track {track_id}: ticket id {t.id!r} cannot be written to plan.md "
                         f"(it contains ']' or a line break)")
    first, *rest = t.description.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = f"- [{_TICKET_MARK.get(t.status, ' ')}] Task: {id_token}"
    if first.strip():
        head += " " + first.strip()
    if list(t.depends_on) != list(default_deps) and all(_DEP_ID_OK_RE.fullmatch(d) for d in t.depends_on):
        head += f" (depends on: {', '.join(t.depends_on) or 'none'})"
    sha = _short_sha(t.commit_sha)
    if sha:
        head += f" [{sha}]"
    lines = [head]
    for r in rest:
        lines.append(f"    {r.rstrip()}" if r.strip() else "")
    return lines


def _render_plan(track: Track, existing: _Plan | None,
                 cache: dict[str, tuple[tuple[Any, ...], list[str]]]) -> str:
    """plan.md's text. `cache` (ticket id -> (what the lines were rendered from, the lines)) is
    read and refilled, so an unchanged ticket's lines are not rendered again."""
    old_lines = dict(cache)
    cache.clear()
    out = [f"# Implementation Plan: {_one_line(track.title)}", ""]
    notes = existing.notes if existing else {"": []}
    pre = _strip_blank(notes.get("", []))
    if pre:
        out += pre + [""]
    groups: dict[str, list[Ticket]] = {}
    for t in track.tickets:
        groups.setdefault(_phase_label(t.phase), []).append(t)
    kept = [p for p in (existing.phases if existing else [])
            if p not in groups and _strip_blank(notes.get(p, []))]
    number = 0
    for name in list(groups) + kept:
        if name in groups:
            number += 1
            checkpoint = existing.checkpoints.get(name) if existing else None
            out += [f"## Phase {number}: {name}" + (f" [checkpoint: {checkpoint}]" if checkpoint else ""), ""]
        else:  # a phase that only holds notes: its own heading, as the user wrote it
            out += [existing.headings[name] if existing else f"## {name}", ""]
        body = _strip_blank(notes.get(name, []))
        if body:
            out += body + [""]
        prev: str | None = None
        for t in groups.get(name, []):
            key = (t.description, t.status, t.commit_sha, t.depends_on, prev)
            hit = old_lines.get(t.id)
            if hit is None or hit[0] != key:
                hit = ((t.description, t.status, t.commit_sha, list(t.depends_on), prev),
                       _render_task_lines(t, [prev] if prev else [], track.id))
            cache[t.id] = hit
            out += hit[1]
            prev = t.id
        if groups.get(name):
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _roundtrip_task(t: Ticket, track_id: str) -> _PlanTask:
    """What plan.md says about `t` once we render it: text and sha as the parser reads them."""
    lines = _render_task_lines(t, list(t.depends_on), track_id)
    return _parse_plan("\n".join(lines) + "\n", "").tasks[0]


# ---------------------------------------------------------------------------------------------
# spec.md
# ---------------------------------------------------------------------------------------------

@dataclass
class _Spec:
    title: str | None = None
    preamble: list[str] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)   # (heading line, body)

    def _first(self, kind: str) -> list[str] | None:
        for heading, body in self.sections:
            if _section_kind(heading) == kind:
                return body
        return None

    @property
    def goal(self) -> str | None:
        body = self._first("overview")
        return None if body is None else _parse_goal(body)

    @property
    def criteria(self) -> list[str] | None:
        body = self._first("ac")
        return None if body is None else _parse_criteria(body)


def _section_kind(heading: str) -> str | None:
    name = heading.lstrip("#").strip().rstrip(":").strip()
    name = _SECTION_NUMBER_RE.sub("", name).lower()
    if name in _OVERVIEW_NAMES:
        return "overview"
    if name.startswith("acceptance criteria") or name == "acceptance":
        return "ac"
    if name.startswith("out of scope"):
        return "oos"
    return None


def _parse_spec(text: str) -> _Spec:
    spec = _Spec()
    body: list[str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("## ") or line == "##":
            body = []
            spec.sections.append((line, body))
        elif body is not None:
            body.append(line)
        elif line.startswith("# ") and spec.title is None:
            h = line[2:].strip()
            m = _SPEC_TITLE_RE.match(h)
            spec.title = (m.group(1) if m else h).strip()
        else:
            spec.preamble.append(line)
    return spec


def _parse_goal(body: list[str]) -> str:
    return "\n".join(line.rstrip() for line in _strip_blank(body)).strip()


def _render_goal(goal: str) -> list[str]:
    g = goal.replace("\r\n", "\n").strip()
    return [line.rstrip() for line in g.split("\n")] if g else []


def _parse_criteria(body: list[str]) -> list[str]:
    out: list[str] = []
    cur: list[str] | None = None
    for line in body:
        if not line.strip():
            continue
        m = _BULLET_RE.match(line)
        if m:
            cur = [m.group(1).strip()]
            out.append("")
        elif cur is not None and line[:1].isspace():
            cur.append(line.strip())
        else:
            cur = [line.strip()]
            out.append("")
        out[-1] = "\n".join(cur)
    return out


def _render_criteria(criteria: list[str]) -> list[str]:
    out: list[str] = []
    for c in criteria:
        lines = [x.strip() for x in c.replace("\r\n", "\n").strip().split("\n") if x.strip()]
        if not lines:
            continue
        out.append(f"- {lines[0]}")
        out += [f"  {x}" for x in lines[1:]]
    return out


def _render_spec(track: Track, existing: _Spec | None) -> str:
    out = [f"# Specification: {_one_line(track.title)}", ""]
    if existing is not None:
        pre = _strip_blank(existing.preamble)
        if pre:
            out += pre + [""]
        sections = list(existing.sections)
    else:
        sections = [
            ("## Overview", []),
            ("## Requirements", ["- See the [implementation plan](./plan.md) for the tasks that "
                                 "deliver this track."]),
            ("## Acceptance Criteria", []),
            ("## Out of Scope", ["- Nothing listed yet."]),
        ]
    kinds = [_section_kind(h) for h, _ in sections]
    if "overview" not in kinds:
        sections.insert(0, ("## Overview", []))
        kinds.insert(0, "overview")
    if "ac" not in kinds:
        at = kinds.index("oos") if "oos" in kinds else len(sections)
        sections.insert(at, ("## Acceptance Criteria", []))
        kinds.insert(at, "ac")
    done: set[str] = set()
    for (heading, body), kind in zip(sections, kinds):
        if kind == "overview" and kind not in done:
            body = _render_goal(track.goal)
            done.add(kind)
        elif kind == "ac" and kind not in done:
            body = _render_criteria(track.acceptance_criteria)
            done.add(kind)
        else:
            body = _strip_blank(body)
        out += [heading, ""] + (body + [""] if body else [])
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# tracks.md
# ---------------------------------------------------------------------------------------------

@dataclass
class _RegEntry:
    line: int                 # 0-based index of the entry's header line
    form: str                 # "bullet" (current) or "heading" (legacy "## [ ] Track: ...")
    prefix: str
    marker: str
    title: str
    extra: str
    track_id: str | None = None
    archived: bool = False
    link_line: int | None = None


def _parse_registry(lines: list[str]) -> list[_RegEntry]:
    entries: list[_RegEntry] = []
    for i, line in enumerate(lines):
        m = _REG_BULLET_RE.match(line)
        if m:
            entries.append(_RegEntry(i, "bullet", m.group(1), m.group(2), m.group(3).strip(),
                                     m.group(4)))
            continue
        m = _REG_HEAD_RE.match(line)
        if m:
            entries.append(_RegEntry(i, "heading", m.group(1), m.group(2), m.group(3).strip(), ""))
    for k, e in enumerate(entries):
        end = entries[k + 1].line if k + 1 < len(entries) else len(lines)
        for j in range(e.line, end):
            if j > e.line and (lines[j].strip() == "---" or lines[j].lstrip().startswith("#")):
                break
            for target in _LINK_RE.findall(lines[j]):
                tm = _LINK_TRACK_RE.search(urllib.parse.unquote(target.strip()))
                if tm:
                    e.track_id, e.archived, e.link_line = tm.group(2), tm.group(1) == "archive", j
                    break
            if e.track_id is not None:
                break
    return entries


def _registry_link(track_id: str) -> str:
    q = urllib.parse.quote(track_id)
    return f"*Link: [./tracks/{q}/](./tracks/{q}/)*"


def _registry_with(text: str | None, track: Track) -> str:
    """tracks.md with `track`'s entry added or updated in place; everything else untouched."""
    text = REGISTRY_HEADER if text is None else text
    lines = text.split("\n")
    entries = _parse_registry(lines)
    title = _one_line(track.title)
    mark = _REGISTRY_MARK.get(track.status, "~")
    match = next((e for e in entries if e.track_id == track.id and not e.archived), None)
    if match is None:
        match = next((e for e in entries if e.track_id is None and e.title == title), None)
    if match is not None:
        if match.form == "bullet":
            lines[match.line] = f"{match.prefix}[{mark}] **Track: {title}**{match.extra}"
        else:
            lines[match.line] = f"{match.prefix}[{mark}] Track: {title}"
        if match.link_line is None:
            lines.insert(match.line + 1, _registry_link(track.id))
        return "\n".join(lines)
    body = text.rstrip()
    nonblank = [x for x in body.split("\n") if x.strip()]
    parts = [body]
    if not nonblank or nonblank[-1].strip() != "---":
        parts += ["", "---"]
    parts += ["", f"- [{mark}] **Track: {title}**", _registry_link(track.id), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Settings helpers
# ---------------------------------------------------------------------------------------------

def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_NAMES or k.endswith(_SECRET_SUFFIXES)


def _secret_keys(data: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            name = f"{prefix}{k}"
            if _is_secret_key(str(k)):
                found.append(name)
            found += _secret_keys(v, name + ".")
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _secret_keys(v, f"{prefix[:-1]}[{i}]." if prefix else f"[{i}].")
    return found


def _model_class(ann: Any) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _unknown_keys(model: type[BaseModel], data: Any, prefix: str = "") -> list[str]:
    if not isinstance(data, dict):
        return []   # a wrong type is reported by validation
    out: list[str] = []
    for k, v in data.items():
        info = model.model_fields.get(k)
        if info is None:
            out.append(f"{prefix}{k}")
            continue
        sub = _model_class(info.annotation)
        if sub is not None:
            out += _unknown_keys(sub, v, f"{prefix}{k}.")
        elif typing.get_origin(info.annotation) is dict and isinstance(v, dict):
            args = typing.get_args(info.annotation)
            vsub = _model_class(args[1]) if len(args) == 2 else None
            if vsub is not None:
                for kk, vv in v.items():
                    out += _unknown_keys(vsub, vv, f"{prefix}{k}.{kk}.")
    return out


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_RECENT_TRACKS = 8   # tracks whose last save ConductorStore remembers

_TOML_ESCAPE_RE = re.compile('[\x00-\x08\x0a-\x1f\x7f"\\\\]')
_TOML_COMPACT = {"\b": "\\b", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _toml_escape(m: re.Match[str]) -> str:
    c = m.group()
    return _TOML_COMPACT.get(c) or f"\\u{ord(c):04x}"


def _toml_value(v: Any) -> str | None:
    if type(v) is str:
        return '"' + _TOML_ESCAPE_RE.sub(_toml_escape, v) + '"'
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is int:
        return str(v)
    return None


def _ticket_dump(t: Ticket, fields: dict[str, Any]) -> dict[str, Any]:
    """`t.model_dump(mode="json", exclude_none=True)`, straight from its field values when they
    are all JSON's own types already (they are, for every Ticket field), else through pydantic."""
    out = {}
    for k, v in fields.items():
        if v is None:
            continue
        if type(v) is list:
            if not all(type(x) is str for x in v):
                return t.model_dump(mode="json", exclude_none=True)
        elif type(v) not in (str, int, bool):
            return t.model_dump(mode="json", exclude_none=True)
        out[k] = v
    return out


def _toml_ticket(d: dict[str, Any]) -> str:
    """`tomli_w.dumps({"tickets": [d]})` for a ticket's fields (strings, ints, booleans and
    lists of strings), as tomli_w writes it, without its per-character string loop; anything
    else goes through tomli_w itself."""
    out = ["[[tickets]]\n"]
    for k, v in d.items():
        if type(v) is list:
            items = [_toml_value(x) for x in v]
            if None in items or type(k) is not str or not k or not _BARE_KEY_RE.fullmatch(k):
                return tomli_w.dumps({"tickets": [d]})
            val = "[\n" + "".join(f"    {x},\n" for x in items) + "]" if items else "[]"
        else:
            val = _toml_value(v)
            if val is None or type(k) is not str or not _BARE_KEY_RE.fullmatch(k):
                return tomli_w.dumps({"tickets": [d]})
        out.append(f"{k} = {val}\n")
    return "".join(out)


@dataclass
class _SaveCache:
    """What the last save of one track wrote (see ConductorStore.__init__)."""
    state_bytes: bytes | None = None
    tickets: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    plan_bytes: bytes | None = None
    plan_parse: "_Plan | None" = None
    plan_phases: list[str] = field(default_factory=list)
    plan_lines: dict[str, tuple[tuple[Any, ...], list[str]]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------

class ConductorStore:
    """Tracks and settings of one workspace. Thread-safe for saves through one instance."""

    def __init__(self, workspace: str | os.PathLike):
        self.workspace = Path(workspace).absolute()
        self.conductor_dir = self.workspace / "conductor"
        self.tracks_dir = self.conductor_dir / "tracks"
        self.clutch_dir = self.workspace / ".clutch"
        self._lock = threading.RLock()
        # What save_track knows about the tracks it saved lately (a few, least recently saved
        # dropped first), so saving a big track again costs in proportion to what changed:
        # the state.toml bytes it last wrote (a file still holding them needs no corruption
        # check), each ticket's rendered [[tickets]] chunk with the field values it was
        # rendered from, and plan.md as last written with the parse it was merged from.
        self._recent: collections.OrderedDict[str, _SaveCache] = collections.OrderedDict()

    # -- layout ---------------------------------------------------------------------------

    @property
    def registry_path(self) -> Path:
        return self.conductor_dir / "tracks.md"

    def ensure_layout(self) -> None:
        """conductor/ with the notes files and tracks.md, .clutch/ git-ignored. Never overwrites."""
        with self._lock:
            try:
                self.tracks_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {self.tracks_dir}: {e}") from e
            for name, text in _NOTES_FILES.items():
                _write_if_absent(self.conductor_dir / name, text)
            _write_if_absent(self.registry_path, REGISTRY_HEADER)
            self._ensure_clutch_dir()

    def _ensure_clutch_dir(self) -> None:
        try:
            self.clutch_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {self.clutch_dir}: {e}") from e
        _write_if_absent(self.clutch_dir / ".gitignore", "*\n")

    def sessions_dir(self) -> Path:
        """workspace/.clutch/sessions, created (with .clutch/.gitignore) so logs never dirty git."""
        self._ensure_clutch_dir()
        path = self.clutch_dir / "sessions"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {path}: {e}") from e
        return path

    # -- track ids --------------------------------------------------------------------------

    def new_track_id(self, title: str, today: _dt.date | None = None) -> str:
        """"Add a /health endpoint" -> "add_health_endpoint_20261124" ("_2", "_3"... if taken)."""
        day = today or _dt.date.today()
        base = f"{_shortname(title)}_{day:%Y%m%d}"
        cand, n = base, 2
        while (self.tracks_dir / cand).exists() or (self.conductor_dir / "archive" / cand).exists():
            cand = f"{base}_{n}"
            n += 1
        return cand

    # -- writing tracks ---------------------------------------------------------------------

    def create_track(self, track: Track) -> None:
        _check_track_id(track.id)
        folder = self.tracks_dir / track.id
        with self._lock:
            if folder.exists():
                raise TrackExistsError(f"track {track.id} already exists at {folder}")
            self.ensure_layout()
            try:
                folder.mkdir(parents=True, exist_ok=False)
            except FileExistsError as e:
                raise TrackExistsError(f"track {track.id} already exists at {folder}") from e
            except OSError as e:
                raise StoreError(f"cannot create {folder}: {e}") from e
            self.save_track(track)

    def save_track(self, track: Track) -> None:
        """Write the track's files and its registry entry, each atomically; state.toml first.

        The caller keeps `updated_at` current; an empty `created_at` / `updated_at` is set to
        now on the object passed in, so it matches what is on disk. Content we have no field for
        (other spec.md sections, notes under plan.md phases, unknown metadata.json keys) is
        carried over from the files.
        """
        _check_track_id(track.id)
        seen: set[str] = set()
        dups = sorted({t.id for t in track.tickets if t.id in seen or seen.add(t.id)})
        if dups:
            raise StoreError(f"track {track.id}: duplicate ticket ids {', '.join(dups)}; not saved")
        folder = self.tracks_dir / track.id
        with self._lock:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {folder}: {e}") from e
            now = _utc_now()
            if not track.created_at:
                track.created_at = now
            if not track.updated_at:
                track.updated_at = now
            cache = self._recent.pop(track.id, None) or _SaveCache()
            self._recent[track.id] = cache
            while len(self._recent) > _RECENT_TRACKS:
                self._recent.popitem(last=False)

            # Render everything before writing anything: a render error leaves the files alone.
            plan_path, spec_path = folder / "plan.md", folder / "spec.md"
            meta_path, state_path = folder / "metadata.json", folder / "state.toml"
            old_plan = self._read_bytes(plan_path)
            phases = [t.phase for t in track.tickets]
            if (old_plan is not None and old_plan == cache.plan_bytes
                    and phases == cache.plan_phases):
                # The file is as we wrote it, from the same phases: merging with the parse we
                # rendered it from gives what merging with its own parse would.
                existing_plan = cache.plan_parse
            else:
                text = self._decode_for_merge(plan_path, old_plan)
                existing_plan = _parse_plan(text, str(plan_path)) if text is not None else None
            plan_text = _render_plan(track, existing_plan, cache.plan_lines)
            old_spec = self._read_for_merge(spec_path)
            spec_text = _render_spec(track, _parse_spec(old_spec) if old_spec is not None else None)
            meta_text = self._render_metadata(track, meta_path)
            state_data = self._render_state(track, cache).encode("utf-8")
            registry_text = _registry_with(self._read_for_merge(self.registry_path), track)

            old_state = self._read_bytes(state_path)
            cache.state_bytes, known = None, cache.state_bytes
            if old_state is not None and old_state != known:
                _, corrupt = self._read_state(state_path, old_state)
                if corrupt is not None:
                    _copy_aside(state_path)
            if old_state != state_data:
                _atomic_write_bytes(state_path, state_data)
            cache.state_bytes = state_data
            plan_data = plan_text.encode("utf-8")
            cache.plan_bytes = None
            if old_plan != plan_data:
                _atomic_write_bytes(plan_path, plan_data)
            cache.plan_bytes, cache.plan_parse, cache.plan_phases = plan_data, existing_plan, phases
            _write_if_changed(spec_path, spec_text)
            _write_if_changed(meta_path, meta_text)
            _write_if_absent(folder / "index.md", (
                f"# Track {track.id} Context\n\n"
                "- [Specification](./spec.md)\n"
                "- [Implementation Plan](./plan.md)\n"
                "- [Metadata](./metadata.json)\n"))
            _write_if_changed(self.registry_path, registry_text)

    @staticmethod
    def _read_bytes(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e}") from e

    @staticmethod
    def _decode_for_merge(path: Path, raw: bytes | None) -> str | None:
        """An existing file's bytes as text; undecodable -> copied aside, None."""
        if raw is None:
            return None
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            _copy_aside(path)
            return None

    def _read_for_merge(self, path: Path) -> str | None:
        """An existing file we are about to rewrite; undecodable -> copied aside, None."""
        try:
            return path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            _copy_aside(path)
            return None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e}") from e

    def _render_metadata(self, track: Track, path: Path) -> str:
        old: dict[str, Any] = {}
        text = self._read_for_merge(path)
        if text is not None:
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError:
                loaded = None
            if isinstance(loaded, dict):
                old = loaded
            else:
                _copy_aside(path)
        desc = old.get("description")
        data: dict[str, Any] = {
            "track_id": track.id,
            "type": track.type,
            "status": _META_STATUS.get(track.status, "in_progress"),
            "created_at": track.created_at,
            "updated_at": track.updated_at,
            "description": desc if isinstance(desc, str) and desc.strip() else _one_line(track.title),
        }
        for k, v in old.items():
            data.setdefault(k, v)
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def _render_state(self, track: Track, cache: _SaveCache) -> str:
        """state.toml's text: exactly `tomli_w.dumps` of the whole state, built from one
        rendered chunk per ticket, reused from `cache` for tickets whose fields are unchanged."""
        head = {
            "format": STATE_FORMAT,
            "track": {
                "id": track.id, "title": track.title, "status": track.status, "type": track.type,
                "goal": track.goal, "acceptance_criteria": list(track.acceptance_criteria),
                "created_at": track.created_at, "updated_at": track.updated_at,
            },
        }
        prefix = ("# Clutch's machine state for this track, kept alongside the Conductor files.\n"
                  "# plan.md and spec.md are for people; this file holds what they cannot.\n")
        if not track.tickets:
            return prefix + tomli_w.dumps({**head, "tickets": []})
        old = cache.tickets
        chunks: dict[str, tuple[dict[str, Any], str]] = {}
        for t in track.tickets:
            hit = old.get(t.id)
            if hit is None or hit[0] != t.__dict__:
                fields = {k: list(v) if type(v) is list else v for k, v in t.__dict__.items()}
                hit = (fields, _toml_ticket(_ticket_dump(t, fields)))
            chunks[t.id] = hit
        cache.tickets = chunks
        return prefix + tomli_w.dumps(head) + "\n" + "\n".join(c for _, c in chunks.values())

    # -- reading tracks ---------------------------------------------------------------------

    def load_tracks(self) -> tuple[list[Track], list[LoadProblem]]:
        problems: list[LoadProblem] = []
        entries = self._read_registry(problems)
        if not self.tracks_dir.exists():
            folders: list[Path] = []
        else:
            try:
                folders = sorted(p for p in self.tracks_dir.iterdir()
                                 if p.is_dir() and not p.name.startswith("."))
            except OSError as e:
                raise StoreError(f"cannot list {self.tracks_dir}: {e}") from e
        by_id = {e.track_id: e for e in entries if e.track_id and not e.archived}
        tracks: list[Track] = []
        for folder in folders:
            track, probs = self._load_folder(folder, by_id.get(folder.name))
            tracks.append(track)
            problems += probs
        names = {f.name for f in folders}
        for e in entries:
            if e.track_id and not e.archived and e.track_id not in names:
                problems.append(LoadProblem(str(self.registry_path), e.line + 1, (
                    f"track {e.track_id!r} is listed but {self.tracks_dir / e.track_id} "
                    f"does not exist; ignored")))
        tracks.sort(key=lambda t: (t.created_at, t.id))
        return tracks, problems

    def load_track(self, track_id: str) -> tuple[Track, list[LoadProblem]]:
        _check_track_id(track_id)
        folder = self.tracks_dir / track_id
        if not folder.is_dir():
            raise StoreError(f"no track {track_id}: {folder} does not exist")
        entries = self._read_registry([])
        entry = next((e for e in entries if e.track_id == track_id and not e.archived), None)
        return self._load_folder(folder, entry)

    def _read_registry(self, problems: list[LoadProblem]) -> list[_RegEntry]:
        text = self._read_text(self.registry_path, problems, required=False)
        return _parse_registry(text.split("\n")) if text is not None else []

    @staticmethod
    def _read_text(path: Path, problems: list[LoadProblem], required: bool = True) -> str | None:
        try:
            return path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            if required:
                problems.append(LoadProblem(str(path), None, "missing"))
            return None
        except UnicodeDecodeError as e:
            problems.append(LoadProblem(str(path), None, (
                f"not UTF-8 text ({e.reason} at byte {e.start}); ignored (a copy is kept as "
                f"{path.name}.bad-<time> before it is next overwritten)")))
            return None
        except OSError as e:
            problems.append(LoadProblem(str(path), None, f"cannot read: {e.strerror or e}"))
            return None

    def _read_state(self, path: Path, raw: bytes | None = None
                    ) -> tuple[_StateFile | None, LoadProblem | None]:
        """(state, None) | (None, problem) if corrupt | (None, None) if missing.
        `raw`: the file's bytes, if the caller has just read them."""
        if raw is None:
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return None, None
            except OSError as e:
                return None, LoadProblem(str(path), None, f"cannot read: {e.strerror or e}")
        after = ("the file is kept as it is (copied to state.toml.bad-<time> on the next save); "
                 "the track was loaded from plan.md, spec.md and metadata.json")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            return None, LoadProblem(str(path), None, f"not UTF-8 text (byte {e.start}); {after}")
        except tomllib.TOMLDecodeError as e:
            m = _TOML_POS_RE.search(str(e))
            line = int(m.group(1)) if m else None
            return None, LoadProblem(str(path), line, f"invalid TOML: {e}; {after}")
        try:
            state = _StateFile.model_validate(data)
        except ValidationError as e:
            return None, LoadProblem(str(path), None,
                                     f"invalid state: {_format_validation_error(e)}; {after}")
        if state.format != STATE_FORMAT:
            return None, LoadProblem(str(path), None, (
                f"unsupported state format {state.format} (this Clutch reads {STATE_FORMAT}); {after}"))
        return state, None

    def _read_metadata(self, path: Path, track_id: str, problems: list[LoadProblem]) -> dict[str, str]:
        if not path.exists():
            problems.append(LoadProblem(str(path), None, "missing; using defaults"))
            return {}
        text = self._read_text(path, problems)
        if text is None:
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(LoadProblem(str(path), e.lineno, (
                f"invalid JSON: {e.msg} (column {e.colno}); using defaults (a copy is kept as "
                f"metadata.json.bad-<time> before it is next overwritten)")))
            return {}
        if not isinstance(data, dict):
            problems.append(LoadProblem(str(path), None, "expected a JSON object; using defaults"))
            return {}
        out: dict[str, str] = {}
        given_id = data.get("track_id")
        if given_id is not None and given_id != track_id:
            problems.append(LoadProblem(str(path), None, (
                f"track_id {given_id!r} does not match the folder name {track_id!r}; "
                f"the folder name is used")))
        for key in ("type", "created_at", "updated_at", "description"):
            v = data.get(key)
            if v is None:
                continue
            if not isinstance(v, str):
                problems.append(LoadProblem(str(path), None,
                                            f"{key} should be a string, not {type(v).__name__}; ignored"))
                continue
            out[key] = v
        st = data.get("status")
        if st is not None:
            if isinstance(st, str) and st in _TRACK_STATUSES:
                out["status"] = st
            else:
                problems.append(LoadProblem(str(path), None, (
                    f"unknown status {st!r} (expected new, in_progress, completed or cancelled); "
                    f"ignored")))
        return out

    def _load_folder(self, folder: Path, entry: _RegEntry | None) -> tuple[Track, list[LoadProblem]]:
        tid = folder.name
        problems: list[LoadProblem] = []
        plan_path, spec_path = folder / "plan.md", folder / "spec.md"
        state_path = folder / "state.toml"

        meta = self._read_metadata(folder / "metadata.json", tid, problems)
        spec_text = self._read_text(spec_path, problems)
        plan_text = self._read_text(plan_path, problems)
        spec = _parse_spec(spec_text) if spec_text is not None else None
        plan = _parse_plan(plan_text, str(plan_path)) if plan_text is not None else None
        if plan is not None:
            problems += plan.problems
        state, state_problem = self._read_state(state_path)
        if state_problem is not None:
            problems.append(state_problem)
        if state is not None and state.track.id and state.track.id != tid:
            problems.append(LoadProblem(str(state_path), None, (
                f"track id {state.track.id!r} does not match the folder name {tid!r}; "
                f"the folder name is used")))

        desc = meta.get("description", "")
        title = ((spec.title if spec else None) or (plan.title if plan else None)
                 or (state.track.title if state else "") or (entry.title if entry else "")
                 or _one_line(desc) or tid)

        spec_goal = spec.goal if spec else None
        spec_criteria = spec.criteria if spec else None
        if state is not None:
            goal = state.track.goal
            if spec_goal is not None and _parse_goal(_render_goal(goal)) != spec_goal:
                goal = spec_goal       # edited by hand
            criteria = list(state.track.acceptance_criteria)
            if spec_criteria is not None and _parse_criteria(_render_criteria(criteria)) != spec_criteria:
                criteria = spec_criteria
        else:
            goal = spec_goal or ""
            criteria = spec_criteria or []

        tickets = self._tickets(tid, plan, state, plan_path, state_path, problems)

        if state_problem is not None:
            status = "needs_attention"
        elif state is not None:
            status = state.track.status
        elif "status" in meta:
            status = meta["status"]
        elif entry is not None and entry.marker in _REGISTRY_STATUS:
            status = _REGISTRY_STATUS[entry.marker]
        else:
            status = "new"
        created = (meta.get("created_at") or (state.track.created_at if state else "")
                   or _date_from_track_id(tid))
        updated = meta.get("updated_at") or (state.track.updated_at if state else "") or created
        track = Track(
            id=tid, title=title, goal=goal, acceptance_criteria=criteria, tickets=tickets,
            status=status, type=meta.get("type") or (state.track.type if state else "") or "feature",
            created_at=created, updated_at=updated, problems=[str(p) for p in problems],
        )
        return track, problems

    def _tickets(self, track_id: str, plan: _Plan | None, state: _StateFile | None,
                 plan_path: Path, state_path: Path, problems: list[LoadProblem]) -> list[Ticket]:
        tasks = plan.tasks if plan else []
        prefix = _id_prefix(track_id)
        explicit = {t.explicit_id for t in tasks if t.explicit_id}
        ids: list[str] = []
        first_line: dict[str, int] = {}
        for pos, task in enumerate(tasks, 1):
            tid = task.explicit_id
            if tid is not None and tid in first_line:
                dup = tid
                tid = None
            else:
                dup = None
            if tid is None:
                tid, n = f"{prefix}-{pos}", 2
                while tid in explicit or tid in first_line:
                    tid = f"{prefix}-{pos}-{n}"
                    n += 1
                if dup is not None:
                    problems.append(LoadProblem(str(plan_path), task.line, (
                        f"duplicate ticket id {dup} (first on line {first_line[dup]}); "
                        f"this one is read as {tid}")))
            first_line[tid] = task.line
            ids.append(tid)

        by_id: dict[str, Ticket] = {}
        for t in (state.tickets if state else []):
            if t.id in by_id:
                problems.append(LoadProblem(str(state_path), None,
                                            f"ticket {t.id} appears twice; the first entry is used"))
                continue
            by_id[t.id] = t

        out: list[Ticket] = []
        last_in_phase: dict[str, str] = {}
        used: set[str] = set()
        for task, tid in zip(tasks, ids):
            default = [last_in_phase[task.phase]] if task.phase in last_in_phase else []
            last_in_phase[task.phase] = tid
            st = by_id.get(tid)
            if st is None:
                out.append(Ticket(id=tid, description=task.text, status=task.status,
                                  depends_on=task.deps if task.deps is not None else default,
                                  commit_sha=task.sha, phase=task.phase))
                continue
            used.add(tid)
            rt = _roundtrip_task(st, track_id)
            sha = st.commit_sha if task.sha == rt.sha or not task.sha else task.sha
            completed = task.status == "completed" or st.status == "completed"
            out.append(st.model_copy(deep=True, update={
                "description": st.description if task.text == rt.text else task.text,
                "commit_sha": sha,
                "phase": st.phase if _phase_label(st.phase) == task.phase else task.phase,
                "status": "completed" if completed else st.status,
            }))
        for tid, st in by_id.items():
            if tid not in used:
                problems.append(LoadProblem(str(state_path), None, (
                    f"ticket {tid} is in state.toml but not in plan.md; kept (it is written back "
                    f"to plan.md on the next save)")))
                out.append(st.model_copy(deep=True))
        return out

    # -- settings ---------------------------------------------------------------------------

    def settings_path(self) -> Path:
        return self.clutch_dir / "config.toml"

    def load_settings(self) -> tuple[Settings, list[str]]:
        """Settings from config.toml; on any problem the file is moved aside and defaults used."""
        path = self.settings_path()
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return Settings(), []
        except OSError as e:
            return Settings(), [f"{path}: cannot read settings ({e.strerror or e}); using defaults"]
        reason: str | None = None
        data: dict[str, Any] = {}
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            reason = f"not UTF-8 text (byte {e.start})"
        except tomllib.TOMLDecodeError as e:
            reason = f"invalid TOML: {e}"
        if reason is None:
            secrets = _secret_keys(data)
            if secrets:
                reason = (f"contains key-like field(s) {', '.join(secrets)}: API keys are never "
                          f"read from this file; set GEMINI_API_KEY or GOOGLE_API_KEY in the "
                          f"environment instead")
        if reason is None:
            unknown = _unknown_keys(Settings, data)
            if unknown:
                reason = f"unknown setting(s) {', '.join(unknown)}"
        if reason is None:
            try:
                return Settings.model_validate(data), []
            except ValidationError as e:
                reason = f"invalid value(s): {_format_validation_error(e)}"
        dest = _aside_path(path)
        try:
            os.rename(path, dest)
        except OSError as e:
            raise StoreError(f"{path}: {reason}; and it could not be moved aside to {dest}: {e}") from e
        return Settings(), [f"{path}: {reason}. The file was moved to {dest}; default settings "
                            f"are in use."]

    def save_settings(self, settings: Settings) -> None:
        with self._lock:
            self._ensure_clutch_dir()
            data = settings.model_dump(mode="json", exclude_none=True)
            _atomic_write_bytes(self.settings_path(), tomli_w.dumps(data).encode("utf-8"))
