"""The history of a workspace: every earlier session's comms log, summed and readable again.

Each session of a workspace leaves `.clutch/sessions/<id>/comms.jsonl` (providers.comms). This
module reads those logs back after a restart: usage per tier, track, ticket and stream and in
total (`LogSummary`, summed in entry order exactly as `CommsLog` sums them live, so a figure is
the same float before and after a restart), when the session started and ended, the tickets it
touched and the last epic planned; an earlier session's entries one by one (`SessionLog`, for
the Comms panel's session picker) and its streams' text rebuilt from its entries
(`stream_texts`).

Reading is bounded: a log is read once, then summarised from a cache keyed by its size and
mtime (in memory, and in `summary.json` beside the log, so a restart does not read every old
log again); a log that grew (and still ends, where the last read stopped, in the bytes it read
then) is read on from there; any other change is read again from the start. A damaged line (not
JSON, not an object, a usage that does not validate, a torn last line) is counted and reported
in the summary with its line number, never fatal.

Threads: any thread but the GUI's frame (these read files): the API's pool threads, the GUI's
background pool, tests. State owned: `SessionHistory`'s cache of summaries (session id ->
`LogSummary`) under its own lock (`_lock`), and one scan at a time (`_scan_lock`). `SessionLog`
owns its offsets (read-only after it is built). Everything else is pure functions.
"""
from __future__ import annotations

import array
import json
import logging
import operator
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from models import Usage
from providers.session import ToolOutcome, _brief_args, _brief_result

_logger = logging.getLogger("clutch.history")

COMMS_FILE = "comms.jsonl"
CACHE_FILE = "summary.json"
CACHE_VERSION = 2
KEYS = ("tier", "track", "ticket", "stream")
_TAGS = (("tier", "tier"), ("track", "track_id"), ("ticket", "ticket_id"), ("stream", "stream_id"))
_USAGE_FIELDS = tuple(Usage.model_fields)      # the last one, cost_usd, is the float
TAIL_BYTES = 64                                # see LogSummary.tail
MAX_DAMAGED_KEPT = 20                          # damaged lines described (all are counted)
MAX_STREAM_CHARS = 2_000_000                   # an old stream rebuilt: its last 2 MB of text
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _zero() -> list[Any]:
    return [0] * (len(_USAGE_FIELDS) - 1) + [0.0]


def usage_of(sums: list[Any]) -> Usage:
    return Usage.model_construct(**dict(zip(_USAGE_FIELDS, sums)))


def sums_of(u: Usage) -> list[Any]:
    return [getattr(u, f) for f in _USAGE_FIELDS]


def add_sums(into: dict[str, list[Any]], key: str, vals: list[Any]) -> None:
    """`into[key] += vals`, field by field, left to right (the additions CommsLog makes)."""
    cur = into.get(key)
    into[key] = list(vals) if cur is None else list(map(operator.add, cur, vals))


@dataclass
class LogSummary:
    """What one session's comms log adds up to. `sums[key][k]`: the Usage fields' running sums
    of the entries tagged `k` (key: tier, track, ticket, stream); `total`: of every entry."""
    session_id: str
    file_size: int = 0            # the file's size and mtime when read (the cache's key)
    mtime_ns: int = 0
    inode: int = 0
    consumed: int = 0             # bytes read up to the end of the last complete line
    lines: int = 0                # lines read (complete ones), for damaged lines' numbers
    entries: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    sums: dict[str, dict[str, list[Any]]] = field(default_factory=lambda: {k: {} for k in KEYS})
    total: list[Any] = field(default_factory=_zero)
    tickets: list[str] = field(default_factory=list)     # in the order first seen
    epic: str = ""                # the last epic planned in the session
    damaged: list[dict[str, Any]] = field(default_factory=list)   # {"line", "reason"}
    damaged_count: int = 0
    torn_tail: bool = False       # the file ends in a line with no newline
    error: str = ""               # why the log could not be read at all (not cached)
    tail: str = ""                # the last bytes read (hex): a grown log is read on from
                                  # `consumed` only if they are still there

    def usage(self, key: str) -> dict[str, Usage]:
        return {k: usage_of(v) for k, v in self.sums[key].items()}

    def total_usage(self) -> Usage:
        return usage_of(self.total)

    def describe(self, current: bool = False) -> dict[str, Any]:
        """The JSON `GET /sessions` serves for this session."""
        total = self.total_usage()
        return {
            "id": self.session_id,
            "started": _iso(self.first_ts),
            "ended": None if current else _iso(self.last_ts),
            "current": current,
            "entries": self.entries,
            "tickets": list(self.tickets),
            "tokens": total.total_tokens,
            "cost": round(total.cost_usd, 6),
            "usage": total.summary(),
            "damaged_lines": self.damaged_count,
            "damaged": list(self.damaged),
            **({"error": self.error} if self.error else {}),
        }

    # -- the cache file ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["version"] = CACHE_VERSION
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LogSummary:
        if d.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {d.get('version')!r}, not {CACHE_VERSION}")
        d = dict(d)
        d.pop("version")
        s = cls(**d)
        if set(s.sums) != set(KEYS) or len(s.total) != len(_USAGE_FIELDS):
            raise ValueError("cache holds sums of another shape")
        return s


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _damage(s: LogSummary, line: int, reason: str) -> None:
    s.damaged_count += 1
    if len(s.damaged) < MAX_DAMAGED_KEPT:
        s.damaged.append({"line": line, "reason": reason})


def _entry_of(raw: bytes) -> dict[str, Any]:
    """One line parsed as a comms entry; ValueError saying why it is not one."""
    try:
        entry = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(entry, dict):
        raise ValueError(f"not a JSON object but {type(entry).__name__}")
    return entry


def _add_entry(s: LogSummary, entry: dict[str, Any]) -> None:
    """One entry into the summary: usage (validated as CommsLog validates it), times, tickets,
    the epic. ValueError (the summary unchanged) for a usage that is not one."""
    u = entry.get("usage")
    vals = None
    if u:
        if not isinstance(u, dict):
            raise ValueError("its usage is not an object")
        try:
            vals = sums_of(Usage(**u))
        except ValidationError as e:
            why = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ValueError(f"its usage is not valid ({why})") from None
    s.entries += 1
    ts = entry.get("ts")
    if isinstance(ts, (int, float)):
        s.first_ts = ts if s.first_ts is None else s.first_ts
        s.last_ts = ts
    tk = entry.get("ticket_id")
    if isinstance(tk, str) and tk and tk not in s.tickets:
        s.tickets.append(tk)
    if entry.get("kind") == "epic":
        epic = (entry.get("data") or {}).get("epic")
        if isinstance(epic, str):
            s.epic = epic
    if vals is None:
        return
    s.total[:] = map(operator.add, s.total, vals)
    for key, tag in _TAGS:
        k = entry.get(tag) or ""
        if isinstance(k, str) and k:
            add_sums(s.sums[key], k, vals)


def _tail(path: Path, consumed: int) -> str:
    """The TAIL_BYTES before `consumed` (at most, within their line), as `LogSummary.tail`."""
    if consumed <= 0:
        return ""
    with open(path, "rb") as f:
        start = max(0, consumed - TAIL_BYTES)
        f.seek(start)
        chunk = f.read(consumed - start)
    # the last line read ends at `consumed`; its last TAIL_BYTES bytes (or all of it)
    nl = chunk.rfind(b"\n", 0, len(chunk) - 1)
    return chunk[nl + 1:].hex()


def summarize_log(path: Path, session_id: str, prior: LogSummary | None = None,
                  live: bool = False) -> LogSummary:
    """The summary of the log at `path`, from `prior` when the file has not changed since, or
    by reading only what was appended after it. `live`: the log is being written (the running
    session): a last line with no newline yet is left for the next read, not reported."""
    st = os.stat(path)
    if prior is not None and (prior.file_size, prior.mtime_ns, prior.inode) == (
            st.st_size, st.st_mtime_ns, st.st_ino):
        return prior
    if (prior is not None and prior.inode == st.st_ino and st.st_size > prior.file_size
            and _tail(path, prior.consumed) == prior.tail):
        s = LogSummary.from_json(json.loads(json.dumps(prior.to_json())))   # a deep copy
        if s.torn_tail:             # the torn line was counted; it may be whole now
            s.damaged_count -= 1
            s.damaged = [d for d in s.damaged if d["line"] != s.lines + 1]
            s.torn_tail = False
    else:
        s = LogSummary(session_id)
    s.file_size, s.mtime_ns, s.inode = st.st_size, st.st_mtime_ns, st.st_ino
    with open(path, "rb") as f:
        f.seek(s.consumed)
        pos = s.consumed
        for raw in f:
            if not raw.endswith(b"\n"):
                if not live:
                    s.torn_tail = True
                    _damage(s, s.lines + 1, "torn last line (the session ended mid-write)")
                break
            pos += len(raw)
            s.lines += 1
            s.consumed = pos
            s.tail = raw[-TAIL_BYTES:].hex()
            if not raw.strip():
                continue
            try:
                _add_entry(s, _entry_of(raw))
            except ValueError as e:
                _damage(s, s.lines, str(e).splitlines()[0][:200])
    return s


class SessionLog:
    """An earlier session's comms log, entry by entry: the byte offset of each line that is a
    JSON object, found in one pass; entries are read back from the file when asked for
    (memory: 8 bytes an entry). Other lines are skipped and counted (`damaged`); an entry
    whose usage does not validate is shown as it is (the summary does not count its usage)."""

    def __init__(self, path: Path, session_id: str):
        self.path = path
        self.session_id = session_id
        self._offsets = array.array("Q")
        self._end = 0                   # where the last entry's line ends
        self.damaged = 0
        pos = 0
        with open(path, "rb") as f:
            for raw in f:
                start, pos = pos, pos + len(raw)
                if not raw.endswith(b"\n"):
                    self.damaged += 1
                    break
                if not raw.strip():
                    continue
                try:
                    _entry_of(raw)
                except ValueError:
                    self.damaged += 1
                    continue
                self._offsets.append(start)
                self._end = pos

    def __len__(self) -> int:
        return len(self._offsets)

    def entries(self, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
        """Entries [since:until] (0-based, like a slice), read back from the file."""
        lo, hi, _ = slice(since, until).indices(len(self._offsets))
        out: list[dict[str, Any]] = []
        if hi <= lo:
            return out
        base = self._offsets[lo]
        with open(self.path, "rb") as f:
            f.seek(base)
            if hi < len(self._offsets):
                buf = f.read(self._offsets[hi] - base)
            else:                       # up to the end of the last entry's line
                buf = f.read(self._end - base)
        for j in range(lo, hi):         # each at its offset: damaged lines lie between
            start = self._offsets[j] - base
            out.append(_entry_of(buf[start:buf.index(b"\n", start) + 1]))
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = 2000
        for lo in range(0, len(self), step):
            yield from self.entries(lo, lo + step)


def stream_line(entry: dict[str, Any]) -> str:
    """What an entry adds to its stream's text, as the live stream showed it (close to it:
    the response's text, each tool call and its result; spawns, approvals, errors and status
    changes as one line each)."""
    kind, data = entry.get("kind"), entry.get("data") or {}
    if not isinstance(data, dict):
        return ""
    if kind == "response":
        text = data.get("text") if isinstance(data.get("text"), str) else ""
        return text if not text or text.endswith("\n") else text + "\n"
    if kind == "tool_call":
        args = data.get("args") if isinstance(data.get("args"), dict) else {}
        return f"\n→ {data.get('name', '?')}({_brief_args(args)})\n"
    if kind == "tool_result":
        result = data.get("result") if isinstance(data.get("result"), dict) else {}
        return _brief_result(ToolOutcome(result, {})) + "\n"
    if kind == "spawn":
        return f"— worker spawned (attempt {int(data.get('retry_count') or 0) + 1}) —\n"
    if kind == "approval":
        verdict = "approved" if data.get("approved") else "denied"
        why = f": {data['reason']}" if data.get("reason") else ""
        return f"[{data.get('title') or data.get('kind') or 'approval'}: {verdict}{why}]\n"
    if kind == "error":
        return f"✗ {data.get('message') or data.get('error') or json.dumps(data)[:300]}\n"
    if kind == "status":
        why = f" ({data['reason']})" if data.get("reason") else ""
        return f"[status: {data.get('status', '?')}{why}]\n"
    if kind == "epic":
        return f"EPIC: {data.get('epic', '')}\n"
    return ""


def stream_texts(log: SessionLog) -> dict[str, str]:
    """Every stream of a session rebuilt from its comms entries (the last MAX_STREAM_CHARS of
    each)."""
    parts: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for e in log:
        sid = e.get("stream_id")
        if not isinstance(sid, str) or not sid:
            continue
        piece = stream_line(e)
        if not piece:
            parts.setdefault(sid, [])
            continue
        lst = parts.setdefault(sid, [])
        lst.append(piece)
        sizes[sid] = sizes.get(sid, 0) + len(piece)
        if sizes[sid] > 2 * MAX_STREAM_CHARS:            # keep memory bounded while reading
            text = "".join(lst)[-MAX_STREAM_CHARS:]
            parts[sid], sizes[sid] = [text], len(text)
    return {sid: "".join(p)[-MAX_STREAM_CHARS:] for sid, p in parts.items()}


@dataclass
class EarlierUsage:
    """Usage summed over every earlier session (in session order): `by[key][k]` and `total`."""
    by: dict[str, dict[str, Usage]]
    total: Usage
    sessions: int


class SessionHistory:
    """The sessions of one workspace (`sessions_dir`), `current` being the running one.

    `summaries()` reads each log once (then its cache); `earlier_usage()` sums the earlier
    ones; `open(session_id)` gives a `SessionLog` to read one entry by entry."""

    def __init__(self, sessions_dir: Path, current: str):
        self.sessions_dir = Path(sessions_dir)
        self.current = current
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._cache: dict[str, LogSummary] = {}
        self.cache_errors: list[str] = []      # summary.json files unreadable or unwritable

    def session_path(self, session_id: str) -> Path:
        """The comms log of a session; ValueError for a name that is not a session's."""
        if not isinstance(session_id, str) or not _SESSION_ID_RE.fullmatch(session_id) \
                or session_id in (".", ".."):
            raise ValueError(f"{session_id!r} is not a session id (letters, digits, '.', '_', "
                             f"'-')")
        path = self.sessions_dir / session_id / COMMS_FILE
        if not path.is_file():
            raise KeyError(f"no session {session_id!r} in {self.sessions_dir}")
        return path

    def session_ids(self) -> list[str]:
        """Every session with a comms log, oldest first (ids begin with their start time)."""
        try:
            names = [p.name for p in self.sessions_dir.iterdir()
                     if (p / COMMS_FILE).is_file()]
        except FileNotFoundError:
            return []
        return sorted(names)

    def summary(self, session_id: str) -> LogSummary:
        """One session's summary (reads its log, or only what it gained since the last read)."""
        path = self.session_path(session_id)
        live = session_id == self.current
        with self._lock:
            prior = self._cache.get(session_id)
        if prior is None and not live:
            prior = self._load_cache(path.parent)
            if prior is not None and prior.session_id != session_id:
                prior = None          # a session folder renamed or copied: read its log
        s = summarize_log(path, session_id, prior, live=live)
        if s is not prior:
            with self._lock:
                self._cache[session_id] = s
            if not live:
                self._save_cache(path.parent, s)
        elif prior is not None:
            with self._lock:
                self._cache.setdefault(session_id, prior)
        return s

    def summaries(self, include_current: bool = True) -> list[LogSummary]:
        """Every session's summary, oldest first; sessions with no entry are left out, except
        the current one (when included)."""
        out = []
        with self._scan_lock:
            for sid in self.session_ids():
                if sid == self.current and not include_current:
                    continue
                try:
                    s = self.summary(sid)
                except (FileNotFoundError, KeyError):
                    continue            # removed while we listed
                except OSError as e:    # unreadable (permissions, I/O): listed, saying why
                    s = LogSummary(sid, error=f"cannot read its comms log: {e}")
                if s.entries or s.damaged_count or s.error or sid == self.current:
                    out.append(s)
        return out

    def earlier_usage(self) -> EarlierUsage:
        """Usage over every session but the current one, summed in session order."""
        by: dict[str, dict[str, list[Any]]] = {k: {} for k in KEYS}
        total = _zero()
        n = 0
        for s in self.summaries(include_current=False):
            n += 1
            total = list(map(operator.add, total, s.total))
            for key in KEYS:
                for k, vals in s.sums[key].items():
                    add_sums(by[key], k, vals)
        return EarlierUsage({key: {k: usage_of(v) for k, v in d.items()} for key, d in by.items()},
                            usage_of(total), n)

    def last_epic(self) -> str:
        """The last epic planned in an earlier session ("" if none)."""
        for s in reversed(self.summaries(include_current=False)):
            if s.epic:
                return s.epic
        return ""

    def open(self, session_id: str) -> SessionLog:
        return SessionLog(self.session_path(session_id), session_id)

    # -- summary.json ------------------------------------------------------------------------
    def _load_cache(self, session_dir: Path) -> LogSummary | None:
        p = session_dir / CACHE_FILE
        try:
            return LogSummary.from_json(json.loads(p.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            # a damaged cache is read again from the log (and written anew)
            msg = f"{p}: {e}; reading the log again"
            _logger.warning("session history: %s", msg)
            with self._lock:
                self.cache_errors.append(msg)
            return None

    def _save_cache(self, session_dir: Path, s: LogSummary) -> None:
        p = session_dir / CACHE_FILE
        tmp = p.with_name(f".{CACHE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(s.to_json()), encoding="utf-8")
            os.replace(tmp, p)
        except OSError as e:    # a read-only workspace: the summary stays in memory only
            tmp.unlink(missing_ok=True)
            _logger.warning("session history: could not write %s: %s", p, e)
            with self._lock:
                self.cache_errors.append(f"could not write {p}: {e}")


def combine(parts: list[dict[str, Usage]]) -> dict[str, Usage]:
    """Usage dicts added key by key, in the order given (the same floats each time)."""
    out: dict[str, list[Any]] = {}
    for d in parts:
        for k, u in d.items():
            add_sums(out, k, sums_of(u))
    return {k: usage_of(v) for k, v in out.items()}
