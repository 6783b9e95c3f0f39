"""tracks.md, the registry: read every form in use, change only an entry's marker, append an
entry for a track Clutch creates.

Forms read:
- current: `- [ ] **Track: <description>**` then `*Link: [./tracks/<id>/](./tracks/<id>/)*`
  (the link line may be indented, or be a plain `Link: [...](...)` line);
- legacy: `## [ ] Track: <description>` then a link line;
- a table: `| [x] | [<id>](./tracks/<id>/index.md) | Title | ... |` (lifx-async's tool);
- links to `./tracks/<id>/`, `./conductor/tracks/<id>/`, `archive/<id>` (archived) and
  `tracks/_archive/<id>` (archived).
The marker is the track's live status: `[ ]` new, `[~]` in progress, `[x]` done. The
description is the track's identity for the extension and is never rewritten.

Pure functions; no thread affinity, no state.
"""
from __future__ import annotations

from types import MappingProxyType

import re
import urllib.parse
from dataclasses import dataclass

from store.names import one_line

# tracks.md: [ ] new, [~] in progress, [x] closed (completed, or cancelled: Conductor's
# "implement" picks the first track not marked [x], and a cancelled one must not be picked)
REGISTRY_MARK = MappingProxyType({"new": " ", "planned": " ", "completed": "x", "cancelled": "x"})
REGISTRY_STATUS = MappingProxyType({" ": "new", "": "new", "~": "in_progress", "x": "completed", "X": "completed"})

REGISTRY_HEADER = ("# Project Tracks\n\nThis file tracks all major tracks for the project. "
                   "Each track has its own detailed plan in its respective folder.\n")

_BULLET_RE = re.compile(r"^([ \t]*[-*+][ \t]+)\[([^\]]?)\][ \t]+\*\*Track:\s*(.*?)\*\*(.*)$")
_HEAD_RE = re.compile(r"^(#{2,6}[ \t]+)\[([^\]]?)\][ \t]+Track:\s*(.*?)\s*$")
_ROW_RE = re.compile(r"^([ \t]*\|[ \t]*)\[([^\]]?)\]([ \t]*\|.*)$")
_LINK_RE = re.compile(r"\]\(\s*<?([^)>]+?)>?\s*\)")
_LINK_TRACK_RE = re.compile(r"(?:^|/)(tracks/_archive|tracks|archive)/([^/#?]+)")


def status_of(marker: str) -> str:
    return REGISTRY_STATUS.get(marker, "new")


@dataclass
class RegEntry:
    line: int                 # 0-based index of the entry's line
    form: str                 # "bullet", "heading" or "table"
    marker: str
    marker_col: int
    title: str
    track_id: str | None = None
    archived: bool = False
    link_line: int | None = None


def _link_target(line: str) -> tuple[str, bool] | None:
    for target in _LINK_RE.findall(line):
        tm = _LINK_TRACK_RE.search(urllib.parse.unquote(target.strip()))
        if tm:
            return tm.group(2), tm.group(1) != "tracks"
    return None


def parse_registry(lines: list[str]) -> list[RegEntry]:
    entries: list[RegEntry] = []
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r")
        m = _BULLET_RE.match(line)
        form = "bullet"
        if m is None:
            m, form = _HEAD_RE.match(line), "heading"
        if m is not None:
            col = m.start(2) if m.group(2) else m.end(2)
            entries.append(RegEntry(i, form, m.group(2), col, m.group(3).strip()))
            continue
        m = _ROW_RE.match(line)
        if m is not None:
            got = _link_target(line)
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            title = cells[2] if len(cells) > 2 else ""
            e = RegEntry(i, "table", m.group(2), m.start(2) if m.group(2) else m.end(2), title)
            if got:
                e.track_id, e.archived, e.link_line = got[0], got[1], i
            entries.append(e)
    for k, e in enumerate(entries):
        if e.form == "table":
            continue
        end = entries[k + 1].line if k + 1 < len(entries) else len(lines)
        for j in range(e.line, end):
            text = lines[j].strip()
            if j > e.line and (text == "---" or text.startswith("#")):
                break
            got = _link_target(lines[j])
            if got:
                e.track_id, e.archived, e.link_line = got[0], got[1], j
                break
    return entries


def find_entry(entries: list[RegEntry], track_id: str) -> RegEntry | None:
    return next((e for e in entries if e.track_id == track_id and not e.archived), None)


def set_marker(text: str, track_id: str, status: str) -> str:
    """tracks.md with only `track_id`'s marker changed (no entry: unchanged)."""
    lines = text.split("\n")
    e = find_entry(parse_registry(lines), track_id)
    if e is None:
        return text
    mark = REGISTRY_MARK.get(status, "~")
    if e.marker == mark or (mark == "x" and e.marker == "X"):
        return text
    line = lines[e.line]
    lines[e.line] = line[:e.marker_col] + mark + line[e.marker_col + len(e.marker):]
    return "\n".join(lines)


def registry_link(track_id: str) -> str:
    q = urllib.parse.quote(track_id)
    return f"*Link: [./tracks/{q}/](./tracks/{q}/)*"


def append_entry(text: str | None, track_id: str, description: str, status: str) -> str:
    """A new entry at the end, as the extension's newTrack appends it."""
    text = REGISTRY_HEADER if text is None else text
    mark = REGISTRY_MARK.get(status, "~")
    body = text.rstrip("\n")
    return (f"{body}\n\n---\n\n- [{mark}] **Track: {one_line(description)}**\n"
            f"{registry_link(track_id)}\n")
