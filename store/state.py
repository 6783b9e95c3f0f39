"""state.toml: Clutch's own per-track state, kept beside plan.md, for what the Conductor format
has no place for (dependencies, attempts, failures, Clutch's finer track status, ...).

Its text is exactly `tomli_w.dumps` of the whole state, built from one chunk per ticket so an
unchanged ticket is not rendered again (see facade's save cache). Pure functions; runs on the
caller's thread; owns no state.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models import Ticket, Track, TrackStatus
from store.errors import LoadProblem

STATE_FORMAT = 1
_TOML_POS_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ESCAPE_RE = re.compile('[\x00-\x08\x0a-\x1f\x7f"\\\\]')
_TOML_COMPACT = MappingProxyType({"\b": "\\b", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"',
                                  "\\": "\\\\"})
PREFIX = ("# Clutch's machine state for this track, kept alongside the Conductor files.\n"
          "# plan.md and spec.md are for people; this file holds what they cannot.\n")


class StateTrack(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = ""
    title: str = ""
    status: TrackStatus = "new"
    type: str = "feature"
    goal: str = ""
    acceptance_criteria: list[str] = Field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
    branch: str = ""
    merged_into: str = ""
    verify_command: str | None = None


class StateFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: int = STATE_FORMAT
    track: StateTrack = Field(default_factory=StateTrack)
    tickets: list[Ticket] = Field(default_factory=list)


def format_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(top level)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def read_state(path: Path, raw: bytes | None = None) -> tuple[StateFile | None, LoadProblem | None]:
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
        return None, LoadProblem(str(path), int(m.group(1)) if m else None,
                                 f"invalid TOML: {e}; {after}")
    try:
        state = StateFile.model_validate(data)
    except ValidationError as e:
        return None, LoadProblem(str(path), None,
                                 f"invalid state: {format_validation_error(e)}; {after}")
    if state.format != STATE_FORMAT:
        return None, LoadProblem(str(path), None, (
            f"unsupported state format {state.format} (this Clutch reads {STATE_FORMAT}); {after}"))
    return state, None


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


def ticket_dump(t: Ticket, fields: dict[str, Any]) -> dict[str, Any]:
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


def toml_ticket(d: dict[str, Any]) -> str:
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


def render_state(track: Track, cache: dict[str, tuple[dict[str, Any], str]]) -> str:
    """state.toml's text. `cache` (ticket id -> (fields, chunk)) is read and refilled, so an
    unchanged ticket's chunk is reused."""
    head = {
        "format": STATE_FORMAT,
        "track": {
            "id": track.id, "title": track.title, "status": track.status, "type": track.type,
            "goal": track.goal, "acceptance_criteria": list(track.acceptance_criteria),
            "created_at": track.created_at, "updated_at": track.updated_at,
            "branch": track.branch, "merged_into": track.merged_into,
            **({"verify_command": track.verify_command} if track.verify_command is not None
               else {}),
        },
    }
    if not track.tickets:
        cache.clear()
        return PREFIX + tomli_w.dumps({**head, "tickets": []})
    old = dict(cache)
    cache.clear()
    for t in track.tickets:
        hit = old.get(t.id)
        if hit is None or hit[0] != t.__dict__:
            fields = {k: list(v) if type(v) is list else v for k, v in t.__dict__.items()}
            hit = (fields, toml_ticket(ticket_dump(t, fields)))
        cache[t.id] = hit
    return PREFIX + tomli_w.dumps(head) + "\n" + "\n".join(c for _, c in cache.values())
