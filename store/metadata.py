"""metadata.json: read what the extension wrote; change only the values of `status` and
`updated_at` (and only when the file has those keys), in place in its text, so every other key,
its order, spacing and escapes stay; a new file for a track Clutch creates, in the extension's
template (track_id, type, status, created_at, updated_at, description).

Pure functions; no thread affinity, no state.
"""
from __future__ import annotations

from types import MappingProxyType

import json
from pathlib import Path
from typing import Any

from models import Track
from store.errors import LoadProblem
from store.names import one_line

# metadata.json knows new / in_progress / completed / cancelled
META_STATUS = MappingProxyType({
    "new": "new", "planned": "new", "completed": "completed", "cancelled": "cancelled",
    "in_progress": "in_progress", "paused": "in_progress", "failed": "in_progress",
    "needs_attention": "in_progress",
})


def new_metadata_text(track: Track) -> str:
    data = {"track_id": track.id, "type": track.type,
            "status": META_STATUS.get(track.status, "in_progress"),
            "created_at": track.created_at, "updated_at": track.updated_at,
            "description": one_line(track.title)}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _string_end(s: str, i: int) -> int:
    """s[i] == '"' -> the index after the closing quote."""
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise ValueError("unterminated string")


def _value_end(s: str, i: int) -> int:
    if s[i] == '"':
        return _string_end(s, i)
    depth = 0
    while i < len(s):
        c = s[i]
        if c == '"':
            i = _string_end(s, i)
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            if depth == 0:
                return i
            depth -= 1
        elif c == "," and depth == 0:
            return i
        i += 1
    return i


def top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """key -> (start, end) of its value's text, for the top-level object of a JSON document."""
    spans: dict[str, tuple[int, int]] = {}
    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] != "{":
        return spans
    i = _skip_ws(text, i + 1)
    while i < len(text) and text[i] == '"':
        kend = _string_end(text, i)
        key = json.loads(text[i:kend])
        i = _skip_ws(text, kend)
        if i >= len(text) or text[i] != ":":
            break
        v = _skip_ws(text, i + 1)
        vend = _value_end(text, v)
        end = vend
        while end > v and text[end - 1] in " \t\r\n":
            end -= 1
        spans.setdefault(key, (v, end))
        i = _skip_ws(text, vend)
        if i < len(text) and text[i] == ",":
            i = _skip_ws(text, i + 1)
    return spans


def edit_metadata(text: str, status: str | None, updated_at: str) -> str:
    """`text` with only the string values of `status` (None: left as it is) / `updated_at`
    replaced, for the keys it has."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if not isinstance(data, dict):
        return text
    spans = top_level_spans(text)
    edits = []
    status_value = META_STATUS.get(status, "in_progress") if status is not None else ""
    for key, value in (("status", status_value), ("updated_at", updated_at)):
        if key in spans and isinstance(data.get(key), str) and value and data[key] != value:
            edits.append((spans[key], json.dumps(value, ensure_ascii=False)))
    for (start, end), new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def read_metadata(path: Path, text: str, track_id: str, problems: list[LoadProblem]) -> dict[str, Any]:
    """The fields Clutch reads from metadata.json (type, created_at, updated_at, description,
    status); what is wrong is a problem, never fatal."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(LoadProblem(str(path), e.lineno, (
            f"invalid JSON: {e.msg} (column {e.colno}); using defaults (the file is left as it is)")))
        return {}
    if not isinstance(data, dict):
        problems.append(LoadProblem(str(path), None, "expected a JSON object; using defaults"))
        return {}
    out: dict[str, Any] = {}
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
    if isinstance(st, str):
        out["status"] = st     # checked by the loader, which uses it only without a registry entry
    return out
