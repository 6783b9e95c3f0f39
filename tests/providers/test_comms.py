"""The comms log: thread-safe appends, incremental sums equal sums from scratch, torn lines
set aside on reopen, context-window stats."""
from __future__ import annotations

import json

import pytest

from conftest import run_threads
from ai_client import (AgentSession, CommsLog, FunctionProvider, ModelResponse, ToolCall,
                       ToolOutcome, get_history_bleed_stats, usage_from_entries)
from models import Price, Usage


def test_parallel_appends_keep_every_entry_and_exact_sums(tmp_path):
    log = CommsLog(tmp_path / "c.jsonl")

    def writer(n):
        for i in range(500):
            log.record("response", tier=f"Tier {1 + n % 3}", stream_id=f"s{n}", ticket_id=f"T-{n}",
                       usage=Usage(input_tokens=i, output_tokens=1, total_tokens=i + 1, requests=1))
    run_threads(writer, 8)
    log.close()
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    assert len(lines) == 4000
    entries = [json.loads(l) for l in lines]
    assert sorted(e["seq"] for e in entries) == list(range(1, 4001))
    assert usage_from_entries(entries, "tier") == log.usage_by("tier")
    assert usage_from_entries(entries, "ticket") == log.usage_by("ticket")
    assert log.total().requests == 4000


def test_torn_last_line_is_set_aside_not_fatal(tmp_path):
    p = tmp_path / "c.jsonl"
    good = {"seq": 1, "kind": "response", "tier": "Tier 1", "usage": {"total_tokens": 5,
                                                                      "requests": 1}}
    p.write_text(json.dumps(good) + "\n" + '{"seq": 2, "kind": "requ')
    log = CommsLog(p)
    assert log.set_aside == ['{"seq": 2, "kind": "requ']
    assert log.usage_by("tier")["Tier 1"].total_tokens == 5
    log.record("request", tier="Tier 1")
    log.close()
    lines = p.read_text().splitlines()
    assert [json.loads(l)["seq"] for l in lines] == [1, 2]     # whole lines only
    aside = list(tmp_path.glob("c.jsonl.set-aside-*"))
    assert aside and "requ" in aside[0].read_text()


def test_unparsable_middle_line_is_set_aside(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"seq": 1}\nnot json\n{"seq": 3}\n')
    log = CommsLog(p)
    assert log.set_aside == ["not json"] and len(log) == 2
    log.close()


def test_session_tool_loop_and_bleed_stats(tmp_path):
    log = CommsLog(tmp_path / "c.jsonl")
    turns = iter([
        ModelResponse(text="reading", tool_calls=[ToolCall("1", "read_file", {"path": "a"})],
                      usage=Usage(input_tokens=100, output_tokens=10, total_tokens=110, requests=1)),
        ModelResponse(text="done", usage=Usage(input_tokens=300, output_tokens=5,
                                               total_tokens=305, requests=1)),
    ])
    chunks = []
    s = AgentSession(FunctionProvider(lambda r: next(turns)), tier="Tier 3", model="m",
                     stream_id="Tier 3 (Worker): T-1", system="sys", comms=log,
                     price=Price(input=1.0, output=2.0), ticket_id="T-1",
                     tool_handler=lambda c: ToolOutcome({"ok": True, "output": "x" * 400}, c.args),
                     emit=chunks.append, context_window=1000)
    assert s.send("go") == "done"
    kinds = [e["kind"] for e in log.entries()]
    assert kinds == ["request", "response", "tool_call", "tool_result", "request", "response"]
    assert s.usage.total_tokens == 415 and s.usage.cost_usd == (400 * 1 + 15 * 2) / 1e6
    st = get_history_bleed_stats(s)
    assert st["used_tokens"] == 300 and st["headroom_tokens"] == 700
    assert st["level"] == "green" and st["by_role"]["tool"] > 100
    assert st["utilisation"] == 0.3


def test_a_refused_answer_still_counts_its_tokens(tmp_path):
    import pytest
    from ai_client import ProviderError

    def refuse(req):
        raise ProviderError("blocked by SAFETY", usage=Usage(input_tokens=40, output_tokens=0,
                                                            total_tokens=40, requests=1))
    log = CommsLog(tmp_path / "c.jsonl")
    s = AgentSession(FunctionProvider(refuse), tier="Tier 3", model="m", stream_id="s",
                     system="", comms=log, price=Price(input=1.0), ticket_id="T-1")
    with pytest.raises(ProviderError):
        s.send("hi")
    assert log.usage_by("tier")["Tier 3"].total_tokens == 40
    [err] = [e for e in log.entries() if e["kind"] == "error"]
    assert err["usage"]["cost_usd"] == 40 / 1e6


def test_unicode_line_separators_stay_inside_one_line(tmp_path):
    log = CommsLog(tmp_path / "c.jsonl")
    text = "a\u2028b\u2029c\x85d\x1ce\x0bf"
    log.record("tool_result", data={"output": text})
    log.close()
    lines = (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["data"]["output"] == text


def test_group_commit_keeps_seq_order_and_each_waiting_line_on_disk(tmp_path):
    """Eight threads record at once, half of them without waiting for the disk. Every line
    must reach the file in seq order, and a waiting record's line must be in the file when
    record() returns (what crash-resume relies on)."""
    path = tmp_path / "c.jsonl"
    log = CommsLog(path)
    missing: list[int] = []

    def writer(n: int) -> None:
        for i in range(300):
            e = log.record("log", stream_id=f"s{n}", data={"i": i, "text": "x" * (i % 50)},
                           wait=n % 2 == 0)
            if n % 2 == 0 and f'"seq": {e["seq"]},' not in path.read_text():
                missing.append(e["seq"])
    run_threads(writer, 8)
    assert missing == []
    # lines that did not wait may still be queued: readable all the same, written by flush()
    assert [e["seq"] for e in log.entries()] == list(range(1, 2401))
    log.flush()
    seqs = [json.loads(ln)["seq"] for ln in path.read_text().splitlines()]
    assert seqs == list(range(1, 2401))
    log.close()


def test_a_record_that_does_not_wait_does_no_io_until_the_next_write(tmp_path, monkeypatch):
    path = tmp_path / "c.jsonl"
    log = CommsLog(path)
    writes = []
    import os as _os
    real_write = _os.write
    monkeypatch.setattr("providers.comms.os.write", lambda fd, b: writes.append(len(b)) or real_write(fd, b))
    log.record("spawn", data={"n": 1}, wait=False)
    log.record("status", data={"n": 2}, wait=False)
    assert writes == [] and path.read_text() == ""
    assert [e["data"]["n"] for e in log.entries()] == [1, 2]
    log.record("request", data={"n": 3})          # a waiting record writes all three at once
    assert len(writes) == 1
    assert [json.loads(ln)["data"]["n"] for ln in path.read_text().splitlines()] == [1, 2, 3]
    log.record("status", data={"n": 4}, wait=False)
    log.close()                                     # close writes what is queued
    assert [json.loads(ln)["data"]["n"] for ln in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_a_failed_write_is_retried_before_newer_lines(tmp_path, monkeypatch):
    import os as _os
    path = tmp_path / "c.jsonl"
    log = CommsLog(path)
    log.record("log", data={"n": 1})
    real_write = _os.write
    calls = {"n": 0}

    def failing_write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr("providers.comms.os.write", failing_write)
    with pytest.raises(OSError, match="No space left"):   # the caller is told
        log.record("log", data={"n": 2})
    assert len(log) == 2                 # kept in memory
    log.record("log", data={"n": 3})     # the disk has room again
    log.close()
    assert [json.loads(ln)["data"]["n"] for ln in path.read_text().splitlines()] == [1, 2, 3]


def test_a_write_cut_short_resumes_where_it_stopped(tmp_path, monkeypatch):
    import os as _os
    path = tmp_path / "c.jsonl"
    log = CommsLog(path)
    real_write = _os.write
    calls = {"n": 0}

    def short_then_fail(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:25]))     # part of the first line
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr("providers.comms.os.write", short_then_fail)
    with pytest.raises(OSError):
        log.record("log", data={"n": 1, "pad": "y" * 100})
    # readable meanwhile, from the queue (the file holds a fragment of it)
    assert [e["data"]["n"] for e in log.entries()] == [1]
    log.record("log", data={"n": 2})
    log.close()
    assert [json.loads(ln)["data"]["n"] for ln in path.read_text().splitlines()] == [1, 2]


def test_entries_read_back_from_disk_match_what_was_recorded(tmp_path):
    """The log keeps offsets, not lines: entries() must give back exactly what record()
    returned, for any slice, before and after reopening (also after a torn line was set
    aside and the file rewritten)."""
    path = tmp_path / "c.jsonl"
    log = CommsLog(path)
    recorded = [log.record("response", tier="Tier 3", stream_id=f"s{i % 7}", ticket_id=f"T-{i}",
                           usage=Usage(input_tokens=i, output_tokens=2, total_tokens=i + 2,
                                       requests=1, cost_usd=i * 1e-6),
                           data={"text": "é\u2028" * (i % 5), "i": i}, wait=i % 3 == 0)
                for i in range(500)]
    for a, b in [(0, None), (0, 1), (17, 18), (100, 300), (499, None), (250, 250), (-3, None)]:
        assert log.entries(a, b) == recorded[a:b]
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"seq": 501, "kind": "torn')          # a crash mid-line
    again = CommsLog(path)
    assert len(again.set_aside) == 1
    assert again.entries() == recorded
    assert again.usage_by("stream") == log.usage_by("stream")
    assert again.total() == log.total()
    more = again.record("log", data={"after": True})
    assert again.entries(499) == [recorded[-1], more]
    again.close()


def test_memory_does_not_hold_the_entries(tmp_path):
    import tracemalloc
    tracemalloc.start()
    try:
        log = CommsLog(tmp_path / "c.jsonl")
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5000):
            log.record("request", stream_id="s", data={"prompt": "x" * 2000, "i": i})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    log.close()
    assert (tmp_path / "c.jsonl").stat().st_size > 10_000_000
    assert held < 500_000, f"{held:,} bytes held for 5,000 entries of 2 KB"
