"""The comms log: one record of every model call and tool step, and usage sums per tier,
track, ticket and stream kept from tagged entries (exact when workers run in parallel).

Threads: any. record() is called from executor threads (agents) and the event loop; readers
(GUI, API) call entries()/usage_by() from theirs. State owned: the entries (offsets into the
file, or lines in memory), the running sums, the queue of lines not yet written; guarded by
`_lock` (memory) and `_write_lock` (the file descriptor).
"""
from __future__ import annotations

import array
import json
import operator as _operator
import os
import re
import threading
import time
from collections.abc import Sequence
from functools import reduce as _reduce
from itertools import repeat as _repeat
from pathlib import Path
from types import MappingProxyType
from typing import Any

from models import Usage
from providers.secrets import Scrubber

# Characters str.splitlines() (and many JSONL readers) treat as line breaks, which
# json.dumps(ensure_ascii=False) leaves raw: escaped so one entry is always one line.
_LINE_BREAKS = MappingProxyType(
    {c: f"\\u{c:04x}" for c in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)})
_LINE_BREAK_RE = re.compile("[" + "".join(map(chr, _LINE_BREAKS)) + "]")


_USAGE_FIELDS = tuple(Usage.model_fields)   # the last one, cost_usd, is the float


class CommsLog:
    """Thread-safe, append-only record of every model call and tool step.

    Each entry: seq, ts, kind (spawn, request, response, tool_call, tool_result, approval,
    retry, error, log), direction, tier, stream_id, track_id, ticket_id, provider, model, usage,
    data. Appended to `path` as one JSON line each. Usage sums per tier, track, ticket and
    stream are updated on append, so reading them is O(number of keys).

    With a path, memory does not grow with the entries' size: the log keeps each entry's byte
    offset in the file (8 bytes an entry) and `entries()` reads the ones asked for back from
    the file, so callers get exactly what is on disk. Without a path the lines are kept in
    memory.

    Writing is a group commit: record() encodes its line outside the lock and queues it under
    `_lock` (no I/O there, so readers and other writers never wait on the disk), then under
    `_write_lock` writes every queued line in one os.write, unless a thread before it already
    wrote its line. The file stays in seq order; with wait=True (the default) a line is in
    the file (the OS's) before record() returns.

    Nothing secret is written: each line passes through `scrubber` (the provider keys, and any
    12-character piece of one) before it is kept.
    """

    def __init__(self, path: str | os.PathLike | None = None,
                 scrubber: Scrubber | None = None):
        # Every line is scrubbed of the provider keys (any 12-character piece of one) before
        # it is kept or written. Default: the keys in the environment.
        self.scrubber = scrubber if scrubber is not None else Scrubber.from_env()
        self._lock = threading.Lock()
        self._n = 0                                # entries
        self._lines: list[str] | None = None       # the entries, when there is no file
        self._offsets = array.array("Q")           # each entry's byte offset in the file
        self._size = 0                             # file size once every queued line is written
        # Usage sums per tier, track, ticket and stream, and in total: each a list of the
        # Usage fields' running sums (added in entry order, so the same floats as adding Usage
        # objects), with the Usage built from it cached until the sum changes.
        self._sums: dict[str, dict[str, list[Any]]] = {"tier": {}, "track": {}, "ticket": {},
                                                       "stream": {}}
        self._built: dict[str, dict[str, Usage]] = {"tier": {}, "track": {}, "ticket": {},
                                                    "stream": {}}
        self._total_sum: list[Any] = [0] * (len(_USAGE_FIELDS) - 1) + [0.0]
        self._total: Usage | None = Usage()
        self.path = Path(path) if path else None
        self.set_aside: list[str] = []   # torn or unparsable lines found when opening
        self._write_lock = threading.Lock()
        self._pending: list[bytes] = []  # queued lines (with their newline), oldest first,
        self._pending_first = 0          # ... the first one being entry number _pending_first
        self._head_written = 0           # bytes of _pending[0] a failed write already wrote
        self._fd: int | None = None
        if self.path is None:
            self._lines = []
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load_existing()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o644)
        self._size = os.fstat(self._fd).st_size
        self._pending_first = self._n

    def _load_existing(self) -> None:
        """Index the file line by line (memory: the offsets, not the file). Torn or unparsable
        lines are copied to a set-aside file and the log rewritten without them."""
        assert self.path is not None
        bad: list[bytes] = []
        pos = 0
        with open(self.path, "rb") as f:
            for ln in f:
                start, pos = pos, pos + len(ln)
                if not ln.endswith(b"\n"):          # a torn last line (a crash mid-write)
                    bad.append(ln)
                    break
                if not ln.strip():
                    continue
                try:
                    entry = json.loads(ln)
                    if not isinstance(entry, dict):
                        raise ValueError("not an object")
                except ValueError:
                    bad.append(ln.rstrip(b"\n"))
                    continue
                self._offsets.append(start)
                self._n += 1
                self._add_usage(entry)
        if not bad:
            return
        aside = self.path.with_name(self.path.name + f".set-aside-{int(time.time())}")
        with open(aside, "ab") as f:
            for b in bad:
                f.write(b + b"\n")
        self.set_aside = [b.decode("utf-8", "replace") for b in bad]
        # keep only the complete, parsable lines in the log itself
        tmp = self.path.with_name(self.path.name + ".tmp")
        offsets, self._offsets = self._offsets, array.array("Q")
        with open(self.path, "rb") as src, open(tmp, "wb") as f:
            for off in offsets:
                src.seek(off)
                self._offsets.append(f.tell())
                f.write(src.readline().strip() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _add_usage(self, entry: dict[str, Any]) -> None:
        """An entry read back from the file: its usage into the sums."""
        u = entry.get("usage")
        if u:
            usage = Usage(**u)
            self._add_sums([getattr(usage, f) for f in _USAGE_FIELDS], entry)

    def _add_sums(self, vals: list[Any], entry: dict[str, Any]) -> None:
        add = _operator.add            # field by field, in C (the same additions, in order)
        self._total_sum[:] = map(add, self._total_sum, vals)
        self._total = None        # built again when read
        for key, field_name in (("tier", "tier"), ("track", "track_id"),
                                ("ticket", "ticket_id"), ("stream", "stream_id")):
            k = entry.get(field_name) or ""
            if k:
                sums = self._sums[key]
                cur = sums.get(k)
                if cur is None:
                    cur = [0] * (len(vals) - 1) + [0.0]
                sums[k] = list(map(add, cur, vals))
                self._built[key].pop(k, None)

    def record(self, kind: str, *, tier: str = "", stream_id: str = "", track_id: str = "",
               ticket_id: str = "", provider: str = "", model: str = "", direction: str = "",
               usage: Usage | None = None, data: dict[str, Any] | None = None,
               wait: bool = True) -> dict[str, Any]:
        """Append one entry. With `wait` (the default) the line is in the file when this
        returns. Without, this does no I/O at all (the event loop's records): the line is
        queued and written with the next record that waits, or by `flush()`."""
        # the usage as model_dump() gives it (same keys, same order), without pydantic's cost
        vals = [getattr(usage, f) for f in _USAGE_FIELDS] if usage is not None else None
        entry = {"seq": 0, "ts": 0.0, "kind": kind, "direction": direction, "tier": tier,
                 "stream_id": stream_id, "track_id": track_id, "ticket_id": ticket_id,
                 "provider": provider, "model": model,
                 "usage": dict(zip(_USAGE_FIELDS, vals)) if vals is not None else None,
                 "data": data or {}}
        # Encoded outside the lock (other threads record meanwhile); seq and ts, the first two
        # keys, are spliced in under it, where the work is a few appends and additions.
        rest = json.dumps(entry, ensure_ascii=False, default=str)
        if self.scrubber:
            rest = self.scrubber.scrub(rest)
        if _LINE_BREAK_RE.search(rest):        # rare: translate() walks every character
            rest = rest.translate(_LINE_BREAKS)
        rest_b = (rest[rest.index('"kind"'):] + "\n").encode("utf-8")
        with self._lock:
            self._n += 1
            seq = self._n
            ts = round(time.time(), 6)
            entry["seq"], entry["ts"] = seq, ts
            data_b = b'{"seq": %d, "ts": %r, ' % (seq, ts) + rest_b
            if vals is not None:
                self._add_sums(vals, entry)
            if self._lines is not None:
                self._lines.append(data_b[:-1].decode("utf-8"))
                return entry
            self._offsets.append(self._size)
            self._size += len(data_b)
            self._pending.append(data_b)
            if self._fd is None:          # closed: kept in memory until read
                return entry
        if wait:
            with self._write_lock:
                self._write_pending(seq)
        return entry

    def flush(self) -> None:
        """Write every line queued so far (any thread; disk I/O)."""
        with self._write_lock:
            self._write_pending(self._n)

    def _write_pending(self, upto: int) -> None:
        """Under _write_lock: write the queued lines, if entry number `upto` is not yet in the
        file. A failed write (disk full) raises; what it did not write stays queued, first."""
        with self._lock:
            if self._pending_first >= upto or self._fd is None:
                return
            batch = list(self._pending)
            skip = self._head_written
        out = b"".join(batch)
        done = skip
        try:
            while done < len(out):
                done += os.write(self._fd, memoryview(out)[done:])
        finally:
            with self._lock:
                # drop the lines written in full; remember how much of the next one went out
                k, acc = 0, 0
                while k < len(batch) and acc + len(batch[k]) <= done:
                    acc += len(batch[k])
                    k += 1
                del self._pending[:k]
                self._pending_first += k
                self._head_written = done - acc

    def entries(self, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
        """Entries [since:until] (0-based, like a slice), decoded: fresh dicts on each call."""
        with self._lock:
            n = self._n
            lo, hi, _ = slice(since, until).indices(n)
            if hi <= lo:
                return []
            if self._lines is not None:
                lines: list[Any] = self._lines[lo:hi]
                return [json.loads(ln) for ln in lines]
            first = self._pending_first
            from_file = (lo, min(hi, first)) if lo < first else None
            queued = self._pending[max(lo, first) - first:hi - first] if hi > first else []
            if from_file is not None:
                a, b = from_file
                start = self._offsets[a]
                end = self._offsets[b] if b < n else self._size   # b <= first: all written
        out: list[dict[str, Any]] = []
        if from_file is not None:
            assert self.path is not None
            with open(self.path, "rb") as f:
                f.seek(start)
                raw = f.read(end - start)
            out = [json.loads(ln) for ln in raw.split(b"\n") if ln.strip()]
            if len(out) != from_file[1] - from_file[0]:
                raise ValueError(f"comms log {self.path} changed on disk while it was open: "
                                 f"expected {from_file[1] - from_file[0]} entries at byte "
                                 f"{start}, found {len(out)}")
        out += [json.loads(ln) for ln in queued]
        return out

    def __len__(self) -> int:
        with self._lock:
            return self._n

    def usage_by(self, key: str) -> dict[str, Usage]:
        """key: "tier", "track", "ticket" or "stream"."""
        with self._lock:
            built = self._built[key]
            if len(built) != len(self._sums[key]):
                for k, sums in self._sums[key].items():
                    if k not in built:
                        built[k] = Usage.model_construct(**dict(zip(_USAGE_FIELDS, sums)))
            return dict(built)

    def usage_by_tier(self) -> dict[str, Usage]:
        return self.usage_by("tier")

    def total(self) -> Usage:
        with self._lock:
            if self._total is None:
                self._total = Usage.model_construct(**dict(zip(_USAGE_FIELDS, self._total_sum)))
            return self._total

    def close(self) -> None:
        """Write what is queued and close the file. Entries recorded afterwards are kept in
        memory (and readable) but not written."""
        with self._write_lock:
            if self._fd is None:
                return
            try:
                self._write_pending(self._n)
            finally:
                with self._lock:
                    fd, self._fd = self._fd, None
                os.close(fd)


def usage_from_entries(entries: Sequence[dict[str, Any]], key: str = "tier") -> dict[str, Usage]:
    """Sum usage over entries by a tag, from scratch (for checking the incremental sums)."""
    field_name = {"tier": "tier", "track": "track_id", "ticket": "ticket_id",
                  "stream": "stream_id"}[key]
    # Group the usage dicts by key, then sum each field of a group left to right with plain
    # numbers (the same additions in the same order, so the same floats, as adding Usage
    # objects one by one). A group holding anything but exactly the expected numbers is summed
    # the old way, through Usage(**u), so it validates (and raises) as before.
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        u = e.get("usage")
        if u:
            k = e.get(field_name)
            if k:
                g = groups.get(k)
                if g is None:
                    groups[k] = [u]
                else:
                    g.append(u)
    fields = Usage.model_fields
    names = tuple(fields)
    expected = tuple(float if fields[n].annotation is float else int for n in names)
    out: dict[str, Usage] = {}
    for k, g in groups.items():
        sums: dict[str, Any] = {}
        for n, t in zip(names, expected):
            col = list(map(dict.get, g, _repeat(n)))
            if set(map(type, col)) != {t}:
                break
            sums[n] = _reduce(_operator.add, col, t())
        else:
            out[k] = Usage(**sums)
            continue
        total = Usage()
        for u in g:
            total = total + Usage(**u)
        out[k] = total
    return out
