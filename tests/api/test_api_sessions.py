"""History across restarts over the API (issue 20, defect 4): an epic run on the offline model
through the API, then the app closed and a new engine and server started on the same
workspace: `GET /sessions` and `GET /state` give the same figures as before; a damaged log
line is reported, not fatal; `?session=current` is the running session only."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import hook_server
from conftest import fast_settings
from hook_server import ApiClient, ApiError
from ai_client import OfflineProvider

# The offline model answers, priced as Gemini's models are (the offline provider is free), so
# that cost is a real sum of floats.
PRICED = dict(provider="gemini")
FIGURES = ("id", "started", "entries", "tickets", "tokens", "cost", "usage", "damaged_lines")


def serve(workspace: Path):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings(**PRICED), provider=OfflineProvider(pace_s=0),
                          auto_approve=True).start()
    srv = hook_server.start_for_engine(eng, port=0)
    return eng, srv, ApiClient(srv.url, srv.token)


def close(eng, srv) -> None:
    srv.stop()
    eng.close()


def run_epic(client: ApiClient, epic: str) -> list[str]:
    client.plan_epic(epic)
    proposal = client.wait_for_proposal(30)
    tracks = client.accept_tracks(proposal["tracks"][:2])
    for t in tracks:
        client.plan_track(t["id"])
        client.wait_for_track_status(t["id"], "planned", 30)
        client.start_track(t["id"])
    for t in tracks:
        client.wait_for_track_status(t["id"], ("completed", "failed"), 60)
    return [t["id"] for t in tracks]


def test_sessions_and_state_give_the_same_figures_after_a_restart(workspace):
    eng, srv, client = serve(workspace)
    try:
        run_epic(client, "A greeting CLI with tests")
        before_sessions = client.sessions()
        state_all, state_current = client.state(), client.state(session="current")
        before_all, before_current = state_all["usage"], state_current["usage"]
        assert (state_all["usage_scope"], state_current["usage_scope"]) == ("all", "current")
        first_id = eng.session_id
    finally:
        close(eng, srv)
    [s1] = before_sessions
    assert s1["id"] == first_id and s1["current"] and s1["ended"] is None
    assert s1["tokens"] > 0 and s1["cost"] > 0 and s1["tickets"] and s1["damaged_lines"] == 0
    # the running session is the only one: all sessions and the current one agree
    assert before_all == before_current
    assert before_all["total"]["total_tokens"] == s1["tokens"]
    assert before_all["total"]["cost_usd"] == s1["cost"]

    eng, srv, client = serve(workspace)             # the restart
    try:
        after_sessions = client.sessions()
        after_all = client.state()["usage"]
        after_current = client.state(session="current")["usage"]
        # a second epic in the new session adds to the history; the first one's figures stay
        run_epic(client, "Docs for the greeting CLI")
        later = client.sessions()
        later_all = client.state()["usage"]
        later_current = client.state(session="current")["usage"]
        second_id = eng.session_id
    finally:
        close(eng, srv)
    old = {s["id"]: s for s in after_sessions}[first_id]
    assert {k: old[k] for k in FIGURES} == {k: s1[k] for k in FIGURES}
    assert old["current"] is False and old["ended"] >= old["started"]
    assert after_all == before_all, "usage over every session changed across the restart"
    assert after_current["total"]["total_tokens"] == 0 and after_current["tier"] == {}
    assert [s["id"] for s in later] == [first_id, second_id]
    assert {k: later[0][k] for k in FIGURES} == {k: s1[k] for k in FIGURES}
    # all sessions = the first session + the running one, per tier and in total
    for tier, u in later_all["tier"].items():
        mine = later_current["tier"].get(tier, {}).get("total_tokens", 0)
        theirs = before_all["tier"].get(tier, {}).get("total_tokens", 0)
        assert u["total_tokens"] == mine + theirs, tier
    assert later_all["total"]["total_tokens"] == s1["tokens"] + later[1]["tokens"]

    # and once more: the second session's figures too survive their restart
    eng, srv, client = serve(workspace)
    try:
        again = client.sessions()
        again_all = client.state()["usage"]
    finally:
        close(eng, srv)
    assert [{k: s[k] for k in FIGURES} for s in again[:2]] == \
        [{k: s[k] for k in FIGURES} for s in later]
    assert again_all == later_all


def test_a_damaged_log_line_is_reported_not_fatal(workspace):
    eng, srv, client = serve(workspace)
    try:
        run_epic(client, "Something small")
        good = client.sessions()[0]
        path = eng.session_dir / "comms.jsonl"
    finally:
        close(eng, srv)
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = lines[:3] + [b'{"seq": 99, "usage": {"input_tokens": "many"}}\n', b"not json\n"] \
        + lines[3:] + [b'{"seq": 1000, "kind": "resp']          # and a torn last line
    path.write_bytes(b"".join(damaged))
    eng, srv, client = serve(workspace)
    try:
        [s, _current] = client.sessions()
        usage = client.state()["usage"]
    finally:
        close(eng, srv)
    assert s["damaged_lines"] == 3
    assert [d["line"] for d in s["damaged"]] == [4, 5, len(damaged)]
    assert "not JSON" in s["damaged"][1]["reason"] and "torn" in s["damaged"][2]["reason"]
    assert s["tokens"] == good["tokens"] and s["cost"] == good["cost"]     # the rest counted
    assert usage["total"]["total_tokens"] == good["tokens"]


def test_a_bad_session_scope_is_a_400(workspace):
    eng, srv, client = serve(workspace)
    try:
        with pytest.raises(ApiError) as e:
            client.state(session="yesterday")
        assert e.value.status == 400 and "'all' or 'current'" in e.value.message
        assert client.sessions()[0]["current"] is True     # a new workspace: just this one
    finally:
        close(eng, srv)
