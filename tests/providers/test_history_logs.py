"""Reading earlier sessions' comms logs back (providers.history): the sums equal the live
log's to the last bit, a log is read once and then summarised from its cache (in memory and
in summary.json) until it changes, a grown log is read from where the last read stopped,
damaged lines are reported with their line numbers, and a big log is read in bounded time."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ai_client import CommsLog, SessionHistory, SessionLog, stream_texts, summarize_log
from models import Usage


def fill(log: CommsLog, n: int, start: int = 0) -> None:
    """n model calls over two tiers, three tickets and their streams, costs that do not add
    up exactly in binary (so the order of the additions shows)."""
    for i in range(start, start + n):
        tk = f"T-00{i % 3 + 1}"
        sid = f"Tier 3 (Worker): {tk}"
        log.record("request", tier="Tier 3", stream_id=sid, track_id="trk", ticket_id=tk,
                   direction="out", data={"round": i})
        log.record("response", tier="Tier 3" if i % 4 else "Tier 2", stream_id=sid,
                   track_id="trk", ticket_id=tk, direction="in",
                   usage=Usage(input_tokens=100 + i, output_tokens=7 * i % 50, total_tokens=
                               100 + i + 7 * i % 50, requests=1, cost_usd=0.1 * (i % 7) + 1e-7 * i),
                   data={"text": f"answer {i}\n"})
        log.record("tool_call", tier="Tier 3", stream_id=sid, ticket_id=tk, direction="-",
                   data={"id": f"c{i}", "name": "write_file", "args": {"path": f"f{i}.py"}})
        log.record("tool_result", tier="Tier 3", stream_id=sid, ticket_id=tk, direction="-",
                   data={"id": f"c{i}", "name": "write_file",
                         "result": {"ok": True, "output": f"wrote f{i}.py"}})


def session(tmp_path: Path, sid: str, n: int) -> CommsLog:
    log = CommsLog(tmp_path / "sessions" / sid / "comms.jsonl")
    fill(log, n)
    return log


def test_the_sums_read_back_are_the_live_sums_to_the_last_bit(tmp_path):
    log = session(tmp_path, "20261201-100000-aaaa", 60)
    s = summarize_log(log.path, "x")
    assert s.total_usage() == log.total() and s.total_usage().cost_usd == log.total().cost_usd
    for key in ("tier", "track", "ticket", "stream"):
        assert s.usage(key) == log.usage_by(key), key
    assert s.entries == len(log) and s.damaged_count == 0
    assert s.tickets == ["T-001", "T-002", "T-003"]
    assert s.first_ts == log.entries(0, 1)[0]["ts"] and s.last_ts == log.entries(-1)[0]["ts"]
    log.close()


def test_a_log_is_read_once_then_from_its_cache_until_it_changes(tmp_path):
    sessions = tmp_path / "sessions"
    old = session(tmp_path, "20261201-100000-aaaa", 30)
    old.close()
    cur = session(tmp_path, "20261202-100000-bbbb", 5)
    h = SessionHistory(sessions, current="20261202-100000-bbbb")
    first = h.summary("20261201-100000-aaaa")
    assert h.summary("20261201-100000-aaaa") is first              # in memory: not read again
    cache = sessions / "20261201-100000-aaaa" / "summary.json"
    assert json.loads(cache.read_text())["entries"] == 30 * 4
    # a restart: a new history reads summary.json, not the log. Proof: the log's bytes are
    # replaced (same size, same mtime) by lines that would not parse; the figures stand.
    path = old.path
    st = os.stat(path)
    path.write_bytes(b"x" * (st.st_size - 1) + b"\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = SessionHistory(sessions, current="other").summary("20261201-100000-aaaa")
    assert again.total == first.total and again.damaged_count == 0
    # the log changes (its mtime): read again, and the damage is now reported
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = SessionHistory(sessions, current="other").summary("20261201-100000-aaaa")
    assert changed.entries == 0 and changed.damaged_count == 1
    # a session folder renamed: its summary.json names the old id, so the log is read again
    os.rename(sessions / "20261201-100000-aaaa", sessions / "20261201-100000-cccc")
    renamed = SessionHistory(sessions, current="other").summary("20261201-100000-cccc")
    assert renamed.session_id == "20261201-100000-cccc" and renamed.damaged_count == 1
    # the running session is never cached on disk, and is left out of "earlier"
    assert not (sessions / "20261202-100000-bbbb" / "summary.json").exists()
    earlier = h.earlier_usage()
    assert earlier.sessions == 1
    cur.close()


def test_a_grown_log_is_read_from_where_the_last_read_stopped(tmp_path):
    log = session(tmp_path, "20261201-100000-aaaa", 10)
    s1 = summarize_log(log.path, "a", live=True)
    fill(log, 10, start=10)
    s2 = summarize_log(log.path, "a", s1, live=True)
    assert s2 is not s1 and s2.consumed > s1.consumed
    assert s2.total_usage() == log.total() and s2.usage("ticket") == log.usage_by("ticket")
    assert s1.entries == 40                            # the earlier summary is not changed
    # a half-written last line of the running session is left for the next read
    with open(log.path, "ab") as f:
        f.write(b'{"seq": 999, "kind": "resp')
    s3 = summarize_log(log.path, "a", s2, live=True)
    assert s3.entries == s2.entries and s3.damaged_count == 0 and s3.consumed == s2.consumed
    log.close()


def test_damaged_lines_are_reported_with_their_numbers_and_the_rest_counted(tmp_path):
    log = session(tmp_path, "s1", 5)
    log.close()
    good = summarize_log(log.path, "s1")
    lines = log.path.read_bytes().splitlines(keepends=True)
    bad = (lines[:2] + [b"[1, 2]\n", b"{oops\n",
                        b'{"seq": 7, "usage": {"input_tokens": "lots"}}\n', b"\n"]
           + lines[2:] + [b'{"seq": 100, "ts": 1.0, "ki'])
    log.path.write_bytes(b"".join(bad))
    s = summarize_log(log.path, "s1")
    assert s.damaged_count == 4
    assert [d["line"] for d in s.damaged] == [3, 4, 5, len(bad)]
    reasons = [d["reason"] for d in s.damaged]
    assert "not a JSON object" in reasons[0] and "not JSON" in reasons[1]
    assert "input_tokens" in reasons[2] and "torn" in reasons[3]
    assert s.total == good.total and s.entries == good.entries
    # the torn line finished later (a log that grew): counted, and no longer reported
    with open(log.path, "ab") as f:
        f.write(b'nd": "log", "data": {}}\n')
    s2 = summarize_log(log.path, "s1", s)
    assert s2.damaged_count == 3 and s2.entries == s.entries + 1 and not s2.torn_tail
    # entry by entry: lines that are not JSON objects skipped; the one whose usage is not
    # valid is shown (nothing lost), though its usage is not counted
    sl = SessionLog(log.path, "s1")
    assert len(sl) == s2.entries + 1 and sl.damaged == 2
    assert sl.entries(2, 3)[0] == {"seq": 7, "usage": {"input_tokens": "lots"}}
    assert [e["seq"] for e in sl.entries(0, 5)] == [1, 2, 7, 3, 4]
    assert [e["seq"] for e in sl][-1] == 100 and len(list(sl)) == len(sl)


def test_streams_are_rebuilt_from_the_log(tmp_path):
    log = session(tmp_path, "s1", 6)
    log.record("spawn", tier="Tier 3", stream_id="Tier 3 (Worker): T-001", ticket_id="T-001",
               data={"retry_count": 1})
    log.record("status", tier="Tier 3", stream_id="Tier 3 (Worker): T-001", ticket_id="T-001",
               data={"status": "completed", "reason": ""})
    log.close()
    streams = stream_texts(SessionLog(log.path, "s1"))
    assert sorted(streams) == [f"Tier 3 (Worker): T-00{i}" for i in (1, 2, 3)]
    t1 = streams["Tier 3 (Worker): T-001"]
    assert t1.startswith("answer 0\n\n→ write_file(path='f0.py')\n  ✓ wrote f0.py\n")
    assert t1.endswith("— worker spawned (attempt 2) —\n[status: completed]\n")


def test_session_ids_are_checked(tmp_path):
    h = SessionHistory(tmp_path / "sessions", current="x")
    assert h.summaries() == [] and h.earlier_usage().sessions == 0
    for bad in ("../etc", "a/b", "", ".."):
        with pytest.raises(ValueError, match="not a session id"):
            h.open(bad)
    with pytest.raises(KeyError, match="no session 'nope'"):
        h.open("nope")


def test_a_big_log_is_read_in_bounded_time_and_then_costs_nothing(tmp_path):
    log = session(tmp_path, "20261201-100000-aaaa", 15_000)      # 60,000 entries
    log.close()
    size = log.path.stat().st_size
    h = SessionHistory(tmp_path / "sessions", current="now")
    t0 = time.perf_counter()
    s = h.summary("20261201-100000-aaaa")
    first = time.perf_counter() - t0
    assert s.entries == 60_000 and s.total_usage() == log.total()
    t0 = time.perf_counter()
    for _ in range(100):
        h.earlier_usage()
    cached = (time.perf_counter() - t0) / 100
    # generous bounds for a loaded 2-core machine: ~10 MB in well under 20 s, then a stat
    assert first < 20.0, f"{size / 1e6:.1f} MB took {first:.1f}s"
    assert cached < 0.05, f"a cached read took {cached * 1000:.1f} ms"

