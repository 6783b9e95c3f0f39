"""The engine's history reads (engine.history): every session of the workspace, usage over
all of them or this one, the epic and an earlier session's streams after a restart; a resumed
session is not counted twice; bad session ids and scopes are refused clearly."""
from __future__ import annotations

import pytest

from conftest import fast_settings
from models import Usage


def run_epic(eng, epic: str) -> None:
    eng.plan_epic(epic).result(30)
    tracks = eng.accept_tracks(eng.current_proposal()[1].tracks[:1]).result(30)
    for t in tracks:
        eng.plan_track(t.id).result(30)
        eng.start_track(t.id).result(60)


def open_engine(workspace, **kw):
    from multi_agent_conductor import ConductorEngine
    return ConductorEngine(workspace, fast_settings(), auto_approve=True, **kw).start()


def test_a_restart_keeps_the_figures_the_epic_and_the_streams(workspace):
    eng = open_engine(workspace)
    try:
        run_epic(eng, "Make a tiny calculator")
        before = eng.usage_report("all")
        first = eng.session_id
        live = {sid: eng.stream_text(sid) for sid in eng.stream_info()}
        entries = eng.comms.entries()
    finally:
        eng.close()
    assert [e["data"]["epic"] for e in entries if e["kind"] == "epic"] == ["Make a tiny calculator"]
    eng = open_engine(workspace)
    try:
        assert eng.session_id != first
        assert eng.usage_report("all") == before
        assert eng.usage_report("current")["total"] == Usage()
        assert eng.remembered_epic() == "Make a tiny calculator"
        streams = eng.session_streams(first)
        log = eng.session_log(first)
        assert [e["seq"] for e in log.entries(0, 3)] == [1, 2, 3] and len(log) == len(entries)
        with pytest.raises(KeyError, match="no session"):
            eng.session_log("20990101-000000-ffff")
        with pytest.raises(ValueError, match="not a session id"):
            eng.session_streams("../../etc")
        with pytest.raises(ValueError, match="'all' or 'current'"):
            eng.usage_report("everything")
    finally:
        eng.close()
    # every stream that spoke is there again, with what its tools did
    assert set(streams) >= set(live)
    t3 = [sid for sid in live if sid.startswith("Tier 3")]
    assert t3 and all("→ " in streams[sid] and "✓" in streams[sid] for sid in t3)
    for sid in t3:      # the worker's own words, as streamed live, are in the rebuilt text
        said = [ln for ln in live[sid].splitlines() if ln.startswith("Done with")]
        assert said and all(ln in streams[sid] for ln in said)


def test_a_resumed_session_is_not_counted_twice(workspace):
    eng = open_engine(workspace)
    try:
        run_epic(eng, "Something to resume")
        before = eng.usage_report("all")
        sid = eng.session_id
    finally:
        eng.close()
    eng = open_engine(workspace, resume=True)
    try:
        assert eng.session_id == sid
        assert eng.usage_report("all") == before == eng.usage_report("current")
        [s] = eng.sessions()
        assert s["id"] == sid and s["current"] and s["tokens"] == before["total"].total_tokens
        assert eng.earlier_usage().sessions == 0
    finally:
        eng.close()
