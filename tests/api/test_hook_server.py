"""The loopback API over a real engine on the offline model: auth, the token file, errors,
reads, server-sent events, actions, and equivalence with direct engine calls."""
from __future__ import annotations

import collections
import http.client
import json
import os
import socket
import stat
import threading
import time
import urllib.parse

import pytest

import hook_server
from conftest import fast_settings, wait_for
from events import StreamChunk, WorkersChanged
from hook_server import ApiClient, ApiError
from models import TrackProposal

EPIC = "Add a health endpoint with its tests, and document it"   # two tracks: code, docs


@pytest.fixture
def serve(make_engine):
    """serve(**engine_kw) -> (engine, server, client); everything stops at teardown."""
    servers = []

    def make(**kw):
        eng = make_engine(**kw)
        srv = hook_server.start_for_engine(eng)
        servers.append(srv)
        return eng, srv, ApiClient.from_workspace(eng.workspace)
    yield make
    for s in servers:
        s.stop()


def raw(srv, method, path, body=None, token="__server__", headers=None):
    """One request with http.client: (status, headers, parsed JSON body). `body` bytes are sent
    as they are; anything else as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    h = dict(headers or {})
    if token == "__server__":
        token = srv.token
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    try:
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(data) if data else None
    finally:
        conn.close()


def assert_error(result, status, contains=""):
    code, headers, body = result
    assert code == status, (code, body)
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
    assert body["error"] and "Traceback" not in body["error"]
    assert contains.lower() in body["error"].lower(), body["error"]
    return body["error"]


def new_track(client, *ticket_specs, title="Core: api track"):
    [track] = client.accept_tracks([{"title": title, "goal": "g", "acceptance_criteria": ["c"]}])
    if ticket_specs:
        client.set_tickets(track["id"], [
            {"id": i, "description": f"work on {i}", "depends_on": list(d),
             "target_files": [f"src/{i.lower()}.py"]} for i, d in ticket_specs])
    return track["id"]


def approve_everything(client, stop, answered=None, decide=None):
    """A thread that answers every pending approval over the API until `stop` is set."""
    answered = answered if answered is not None else []

    def run():
        seen = set()
        while not stop.is_set():
            for r in client.approvals():
                if r["id"] in seen:
                    continue
                seen.add(r["id"])
                answered.append(r)
                payload = decide(r) if decide else None
                client.approve(r["id"], payload)
            stop.wait(0.01)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------------------------------------
# the token file, the bind address, auth
# ---------------------------------------------------------------------------------------------

def test_api_file_is_private_and_names_this_server_and_goes_on_stop(serve):
    eng, srv, client = serve()
    path = eng.workspace / ".clutch" / "api.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    assert set(info) == {"port", "token", "pid", "url"}
    assert info["port"] == srv.port and info["token"] == srv.token
    assert info["pid"] == os.getpid() and info["url"] == srv.url == f"http://127.0.0.1:{srv.port}"
    assert len(srv.token) >= 40                             # token_urlsafe(32): 43 characters
    assert not list(path.parent.glob("*.tmp"))              # the atomic write left nothing behind
    assert srv.httpd.server_address[0] == "127.0.0.1"       # loopback only
    assert srv.httpd.socket.getsockname()[0] == "127.0.0.1"
    srv.stop()
    assert not path.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    srv.stop()   # idempotent


def test_a_new_token_each_run_and_a_server_does_not_remove_anothers_file(serve):
    eng, srv1, _ = serve()
    srv2 = hook_server.start_for_engine(eng)
    try:
        assert srv2.token != srv1.token
        srv1.stop()          # the file is srv2's now: srv1 must leave it
        info = json.loads((eng.workspace / ".clutch/api.json").read_text())
        assert info["token"] == srv2.token
        assert ApiClient.from_workspace(eng.workspace).status()["ok"] is True
    finally:
        srv2.stop()
    assert not (eng.workspace / ".clutch/api.json").exists()


def test_requests_without_the_right_token_get_401_and_change_nothing(serve):
    eng, srv, _ = serve()
    assert_error(raw(srv, "GET", "/status", token=None), 401, "token")
    assert_error(raw(srv, "GET", "/state", token="wrong"), 401)
    assert_error(raw(srv, "GET", "/state", token=srv.token[:-1]), 401)
    assert_error(raw(srv, "GET", "/state", token=None, headers={"Authorization": srv.token}), 401)
    assert_error(raw(srv, "GET", "/state", token=None,
                     headers={"Authorization": "Basic " + srv.token}), 401)
    code, headers, _ = raw(srv, "GET", "/events", token="wrong")
    assert code == 401 and headers["WWW-Authenticate"] == "Bearer"
    # an unauthenticated action does nothing, even on an unknown path
    assert_error(raw(srv, "POST", "/epic", {"epic": EPIC}, token="wrong"), 401)
    assert_error(raw(srv, "GET", "/nowhere", token=None), 401)
    assert eng.last_epic == "" and "Tier 1 (Orchestrator)" not in eng.streams.info()
    assert raw(srv, "GET", "/status")[0] == 200


# ---------------------------------------------------------------------------------------------
# errors: 400, 404, 405, 409, 500
# ---------------------------------------------------------------------------------------------

def test_malformed_requests_get_400_with_a_message(serve):
    eng, srv, client = serve()
    tid = new_track(client, ("T-001", []))
    assert_error(raw(srv, "POST", "/epic", b"{not json"), 400, "not valid JSON")
    assert_error(raw(srv, "POST", "/epic", b"\xff\xfe"), 400, "UTF-8")
    assert_error(raw(srv, "POST", "/epic", b""), 400, "JSON object body")
    assert_error(raw(srv, "POST", "/epic", ["a list"]), 400, "must be a JSON object")
    assert_error(raw(srv, "POST", "/epic", {}), 400, "missing field 'epic'")
    assert_error(raw(srv, "POST", "/epic", {"epic": 42}), 400, "'epic' must be a string")
    assert_error(raw(srv, "POST", "/epic", {"epic": "  "}), 400, "empty")
    assert_error(raw(srv, "POST", "/epic", {"epic": "x" * 100_001}), 400, "limit")
    assert_error(raw(srv, "POST", "/tracks/accept", {"tracks": "all"}), 400, "must be an array")
    assert_error(raw(srv, "POST", "/tracks/accept", {"tracks": []}), 400, "at least one")
    assert_error(raw(srv, "POST", "/tracks/accept", {"tracks": [{"goal": "g"}]}), 400,
                 "tracks[0] is invalid: title")
    assert_error(raw(srv, "PUT", f"/tracks/{tid}/tickets",
                     {"tickets": [{"id": "T-001", "description": "a", "depends_on": ["T-404"]}]}),
                 400, "unknown ticket 'T-404'")
    assert_error(raw(srv, "PUT", f"/tracks/{tid}/tickets", {"tickets": [{"id": "T-9"}]}), 400,
                 "tickets[0] is invalid: description")
    assert_error(raw(srv, "PATCH", f"/tracks/{tid}", {"title": ""}), 400, "must not be empty")
    assert_error(raw(srv, "PATCH", f"/tracks/{tid}", {}), 400, "nothing to change")
    assert_error(raw(srv, "PATCH", f"/tracks/{tid}", {"acceptance_criteria": [1]}), 400,
                 "array of strings")
    assert_error(raw(srv, "POST", "/approvals/A-x", {"approved": "yes"}), 400,
                 "'approved' must be true or false")
    assert_error(raw(srv, "POST", "/approvals/A-x", {"approved": 1}), 400, "true or false")
    assert_error(raw(srv, "POST", "/approvals/A-x", {"reason": "r"}), 400, "missing field 'approved'")
    assert_error(raw(srv, "POST", "/approvals/A-x", {"approved": True, "payload": [1]}), 400,
                 "'payload' must be an object")
    assert_error(raw(srv, "POST", "/tickets/T-001/skip", {"reason": 5}), 400, "'reason'")
    assert_error(raw(srv, "POST", "/epic", b"{}", headers={"Content-Length": "-3"}), 400)
    sid = urllib.parse.quote("Tier 1 (Orchestrator)", safe="")
    assert_error(raw(srv, "GET", f"/streams/{sid}?offset=-1"), 400, "non-negative")
    assert_error(raw(srv, "GET", f"/streams/{sid}?offset=abc"), 400, "non-negative")
    # nothing was changed by any of these
    t = client.state()["tracks"][0]
    assert t["title"] == "Core: api track" and [k["id"] for k in t["tickets"]] == ["T-001"]
    assert eng.last_epic == ""


def test_unknown_ids_and_endpoints_get_404_or_405(serve):
    eng, srv, client = serve()
    for action in ("plan", "start", "pause", "resume"):
        assert_error(raw(srv, "POST", f"/tracks/nope/{action}"), 404, "no track 'nope'")
    assert_error(raw(srv, "PATCH", "/tracks/nope", {"title": "t"}), 404, "no track")
    assert_error(raw(srv, "PUT", "/tracks/nope/tickets", {"tickets": []}), 404, "no track")
    for action in ("retry", "skip", "cancel"):
        assert_error(raw(srv, "POST", f"/tickets/T-404/{action}"), 404, "no ticket 'T-404'")
    assert_error(raw(srv, "POST", "/approvals/A-nope", {"approved": True}), 404, "A-nope")
    assert_error(raw(srv, "GET", "/streams/" + urllib.parse.quote("Tier 3 (Worker): T-404", safe="")),
                 404, "no stream 'Tier 3 (Worker): T-404'")
    assert_error(raw(srv, "GET", "/nowhere"), 404, "no such endpoint")
    assert_error(raw(srv, "POST", "/tracks/x/explode"), 404, "no such endpoint")
    assert_error(raw(srv, "POST", "/status"), 405, "use GET")
    assert_error(raw(srv, "GET", "/epic"), 405, "use POST")
    with pytest.raises(ApiError) as e:
        client.start_track("nope")
    assert e.value.status == 404


def test_an_approval_answered_twice_is_409_and_the_first_answer_stands(serve):
    eng, srv, client = serve(auto_approve=False)
    tid = new_track(client, ("T-001", []))
    client.start_track(tid)
    req = client.wait_for_approval("spawn", ticket_id="T-001")
    assert req["payload"]["prompt"].startswith("TICKET T-001")
    assert client.status()["pending_approvals"] == 1
    assert client.reject(req["id"], reason="not over the API today")["approved"] is False
    msg = assert_error(raw(srv, "POST", f"/approvals/{req['id']}", {"approved": True}), 409,
                       "already answered")
    assert req["id"] in msg
    track = client.wait_for_track_status(tid, ("completed", "failed"))
    t1 = track["tickets"][0]
    assert t1["status"] == "skipped" and "not over the API today" in t1["blocked_reason"]
    decisions = [e for e in eng.comms.entries() if e["kind"] == "approval"]
    assert len(decisions) == 1 and decisions[0]["data"]["approved"] is False
    assert decisions[0]["data"]["source"] == "api"


def test_engine_refusals_are_409_with_the_engines_message(serve):
    eng, srv, client = serve()
    [bare] = client.accept_tracks([{"title": "Bare", "goal": "g", "acceptance_criteria": ["c"]}])
    assert_error(raw(srv, "POST", f"/tracks/{bare['id']}/start"), 409, "has no tickets yet")
    tid = new_track(client, ("T-001", []))
    client.start_track(tid)
    client.wait_for_track_status(tid, "completed")
    assert_error(raw(srv, "POST", "/tickets/T-001/skip"), 409, "already completed")
    assert_error(raw(srv, "POST", "/tickets/T-001/cancel"), 409, "already completed")
    assert_error(raw(srv, "POST", "/tickets/T-001/retry"), 409, "only a failed")
    # another track may not take a ticket id this one uses (DagError: 400)
    assert_error(raw(srv, "PUT", f"/tracks/{bare['id']}/tickets",
                     {"tickets": [{"id": "T-001", "description": "again"}]}), 400, "already used")


def test_an_unexpected_failure_is_a_500_without_a_stack_trace(serve):
    eng, srv, _ = serve()

    def broken():
        raise RuntimeError("the disk is on fire")
    eng.tracks = broken      # an instance attribute: the engine class is untouched
    msg = assert_error(raw(srv, "GET", "/state"), 500, "the disk is on fire")
    assert msg.startswith("internal error") and 'File "' not in msg
    assert raw(srv, "GET", "/status")[0] == 200     # the server goes on


# ---------------------------------------------------------------------------------------------
# reads: status, state, streams
# ---------------------------------------------------------------------------------------------

def test_status_and_state_describe_the_engine(serve):
    eng, srv, client = serve()
    st = client.status()
    assert st == {"ok": True, "workspace": str(eng.workspace), "provider": "offline",
                  "workers": eng.workers(), "pending_approvals": 0,
                  "session_dir": str(eng.session_dir)}
    assert client.plan_epic(EPIC) == {"status": "planning"}
    proposal = client.wait_for_proposal()
    assert proposal["epic"] == EPIC and len(proposal["tracks"]) >= 2
    assert proposal["tracks"] == [p.model_dump() for p in eng.proposal.tracks]
    [track] = client.accept_tracks(proposal["tracks"][:1])
    client.plan_track(track["id"])
    planned = client.wait_for_track_status(track["id"], "planned")
    client.start_track(track["id"])
    done = client.wait_for_track_status(track["id"], "completed")
    state = client.state()
    assert state["proposal"] is None                          # accepted: gone
    assert state["jobs"]["epic"]["state"] == "done"
    assert state["jobs"][f"run:{track['id']}"]["state"] == "done"
    assert done["progress"] == {"done": len(planned["tickets"]), "total": len(planned["tickets"])}
    for k in done["tickets"]:
        info = state["streams"][f"Tier 3 (Worker): {k['id']}"]
        assert info["length"] > 0 and info["state"] == "done"
    assert state["usage"]["tier"] == {t: u.summary() for t, u in eng.usage("tier").items()}
    assert state["usage"]["ticket"].keys() == {k["id"] for k in done["tickets"]}
    assert state["usage"]["track"][track["id"]]["total_tokens"] > 0
    assert state["usage"]["total"]["requests"] == sum(
        u["requests"] for u in state["usage"]["tier"].values())


def test_streams_read_whole_and_by_offset(serve):
    eng, srv, client = serve()
    client.plan_epic(EPIC)
    client.wait_for_proposal()
    sid = "Tier 1 (Orchestrator)"
    whole = client.stream(sid)
    assert whole["stream_id"] == sid and whole["offset"] == 0 and whole["state"] == "done"
    assert whole["text"] == eng.streams.text(sid) and whole["next_offset"] == len(whole["text"]) > 20
    head = 17
    rest = client.stream(sid, offset=head)
    assert rest["offset"] == head and rest["text"] == whole["text"][head:]
    assert rest["next_offset"] == whole["next_offset"]
    tail = client.stream(sid, offset=whole["next_offset"])
    assert tail["text"] == "" and tail["next_offset"] == whole["next_offset"]
    beyond = client.stream(sid, offset=whole["next_offset"] + 1000)
    assert beyond["text"] == ""
    # an ended stream is read back from the session's streams file; gone, the API says so
    eng.streams.spill()
    assert client.stream(sid)["text"] == whole["text"]
    (eng.session_dir / "streams.txt").unlink()
    with pytest.raises(ApiError) as err:
        client.stream(sid)
    assert err.value.status == 500 and "streams file" in str(err.value)


def test_incremental_stream_reads_follow_a_live_worker(serve):
    eng, srv, client = serve(offline_pace_s=0.002)
    tid = new_track(client, ("T-001", []))
    client.start_track(tid)
    sid, offset, parts = "Tier 3 (Worker): T-001", 0, []

    def more():
        nonlocal offset
        try:
            r = client.stream(sid, offset)
        except ApiError as e:
            assert e.status == 404      # not started yet
            return False
        parts.append(r["text"])
        offset = r["next_offset"]
        return r["state"] == "done"
    client.wait_for(more, timeout=30, interval=0.01, what="the worker's stream to end")
    more()
    assert "".join(parts) == eng.streams.text(sid)
    assert sum(1 for p in parts if p) >= 2      # read in pieces, as it streamed


# ---------------------------------------------------------------------------------------------
# server-sent events
# ---------------------------------------------------------------------------------------------

def test_events_stream_the_same_events_the_gui_gets(serve):
    eng, srv, client = serve()
    eng.inbox.drain()
    with client.events(timeout=10) as events:       # subscribed when this returns
        client.plan_epic(EPIC)
        got = []
        for evt in events:
            got.append(evt)
            if evt["type"] == "ProposalReady":
                break
    gui = eng.inbox.drain()        # the GUI's own inbox received the same events, in order
    api_view = [(e["type"], e.get("stream_id"), e.get("text")) for e in got]
    gui_view = [(e.type, getattr(e, "stream_id", None), getattr(e, "text", None)) for e in gui]
    assert api_view == gui_view[:len(api_view)]
    chunks = [e for e in got if e["type"] == "StreamChunk"]
    assert chunks and all(e["stream_id"] == "Tier 1 (Orchestrator)" for e in chunks)
    ready = got[-1]
    assert ready["epic"] == EPIC and ready["tracks"] == [p.model_dump() for p in eng.proposal.tracks]
    assert all(isinstance(e["ts"], float) for e in got)


def test_events_carry_approvals_and_heartbeats_and_end_when_the_server_stops(serve):
    eng, srv, client = serve(auto_approve=False)
    srv.heartbeat_s = 0.1
    tid = new_track(client, ("T-001", []))
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/events", headers={"Authorization": f"Bearer {srv.token}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    client.start_track(tid)
    lines, heartbeats = [], 0
    while heartbeats < 2 or not any(l.startswith("event: ApprovalRequested") for l in lines):
        line = resp.fp.readline().decode()
        assert line, "the stream ended early"
        lines.append(line.rstrip("\n"))
        heartbeats += line.startswith(": heartbeat")
    i = lines.index("event: ApprovalRequested")
    data = json.loads(lines[i + 1].removeprefix("data: "))
    assert data["type"] == "ApprovalRequested" and data["request"]["kind"] == "spawn"
    assert data["request"]["ticket_id"] == "T-001" and lines[i + 2] == ""
    t0 = time.monotonic()
    srv.stop()
    while resp.fp.readline():
        pass                                           # drains to the end of the stream
    assert time.monotonic() - t0 < 3
    conn.close()
    wait_for(lambda: srv.sse_clients == 0, timeout=3, what="the event stream to end")


def test_a_client_that_goes_away_is_unsubscribed(serve):
    eng, srv, client = serve()
    stream = client.events(timeout=5)
    wait_for(lambda: srv.sse_clients == 1, what="one event stream")
    stream.close()
    client.plan_epic(EPIC)         # events to write: the broken pipe is noticed
    client.wait_for_proposal()
    wait_for(lambda: srv.sse_clients == 0, timeout=5, what="the event stream to end")
    assert list(client.iter_events(timeout=0.3)) == []    # a quiet stream just ends at its deadline


# ---------------------------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------------------------

def test_pause_skip_resume_retry_cancel_over_the_api(serve):
    eng, srv, client = serve(auto_approve=False, max_workers=1)
    # T-001 heads the longest chain, so it is spawned first; skipping T-002 satisfies T-003
    tid = new_track(client, ("T-001", []), ("T-002", ["T-001"]), ("T-003", ["T-002"]))
    client.start_track(tid)
    first = client.wait_for_approval("spawn")
    assert first["ticket_id"] == "T-001"
    assert client.pause_track(tid) == {"status": "pausing", "track_id": tid}
    stop = threading.Event()
    approver = approve_everything(client, stop)
    try:
        client.wait_for(lambda: client.state()["tracks"][0]["tickets"][0]["status"] == "completed",
                        what="T-001 to complete")
        t = client.wait_for_track_status(tid, "paused")
        assert [k["status"] for k in t["tickets"]] == ["completed", "todo", "todo"]
        assert client.skip_ticket("T-002", reason="not needed")["status"] == "skipped"
        assert client.resume_track(tid)["status"] == "resumed"
        t = client.wait_for_track_status(tid, "completed")
        k = {k["id"]: k for k in t["tickets"]}
        assert k["T-002"]["status"] == "skipped" and k["T-002"]["blocked_reason"] == "not needed"
        assert k["T-003"]["status"] == "completed"
        assert client.retry_ticket("T-002")["status"] == "retrying"
        t = client.wait_for_track_status(tid, "completed")
        assert t["tickets"][1]["status"] == "completed" and t["tickets"][1]["retry_count"] == 1
    finally:
        stop.set()
        approver.join(5)
    # cancel a ticket that has not started (one worker slot, held by T-010's spawn approval)
    tid2 = new_track(client, ("T-010", []), ("T-011", []), title="Second")
    client.start_track(tid2)
    req = client.wait_for_approval("spawn", ticket_id="T-010")
    assert client.cancel_ticket("T-011", reason="changed my mind")["status"] == "cancelling"
    client.wait_for(lambda: eng.track(tid2).ticket("T-011").status == "cancelled",
                    what="T-011 cancelled")
    client.reject(req["id"], reason="no")
    t = client.wait_for_track_status(tid2, "failed")
    k = {k["id"]: k for k in t["tickets"]}
    assert k["T-011"]["status"] == "cancelled" and k["T-011"]["blocked_reason"] == "changed my mind"
    assert k["T-010"]["status"] == "skipped"
    assert not any(e["kind"] == "spawn" and e["ticket_id"] in ("T-010", "T-011")
                   for e in eng.comms.entries())


def test_edit_track_and_tickets_before_start(serve):
    eng, srv, client = serve()
    tid = new_track(client)
    t = client.update_track(tid, title="Renamed over the API", acceptance_criteria=["a", " ", "b"])
    assert t["title"] == "Renamed over the API" and t["acceptance_criteria"] == ["a", "b"]
    assert eng.track(tid).title == "Renamed over the API"
    t = client.set_tickets(tid, [{"id": "T-001", "description": "one"},
                                 {"id": "T-002", "description": "two", "depends_on": ["T-001"]}])
    assert t["status"] == "planned" and [k["id"] for k in t["tickets"]] == ["T-001", "T-002"]
    assert [k.depends_on for k in eng.track(tid).tickets] == [[], ["T-001"]]


def test_an_api_action_and_a_direct_engine_call_are_equivalent(make_engine, tmp_path):
    """The same work through the API on one engine and through direct calls on another (same
    workspace contents, deterministic offline model): the same tracks, streams, usage, events.
    One worker each: two tickets running side by side in a shared directory see each other's
    files as their timing falls (a worker's map shows a file the other has finished), and
    the token counts then differ by that much (1 full run in 3 failed so)."""
    wa, wb = tmp_path / "a", tmp_path / "b"
    for w in (wa, wb):
        w.mkdir()
        (w / "README.md").write_text("# demo workspace\n")
    ea, eb = make_engine(ws=wa, max_workers=1), make_engine(ws=wb, max_workers=1)
    srv = hook_server.start_for_engine(ea)
    try:
        client = ApiClient(srv.url, srv.token)
        prop = {"title": "Core: same work", "goal": "g", "acceptance_criteria": ["c"]}
        tickets = [{"id": "T-001", "description": "base", "target_files": ["src/a.py"]},
                   {"id": "T-002", "description": "left", "depends_on": ["T-001"],
                    "target_files": ["src/b.py"]},
                   {"id": "T-003", "description": "right", "depends_on": ["T-001"],
                    "target_files": ["src/c.py"]}]
        # through the API
        [ta] = client.accept_tracks([prop])
        client.set_tickets(ta["id"], tickets)
        client.start_track(ta["id"])
        client.wait_for_track_status(ta["id"], "completed")
        # directly
        [tb] = eb.accept_tracks([TrackProposal(**prop)]).result(10)
        eb.set_tickets(tb.id, tickets).result(10)
        eb.start_track(tb.id).result(30)
    finally:
        srv.stop()

    def track_view(eng, tid):
        d = eng.track(tid).model_dump()
        d.pop("created_at"), d.pop("updated_at")
        return d
    assert ta["id"] == tb.id and track_view(ea, ta["id"]) == track_view(eb, tb.id)
    assert ea.streams.info() == eb.streams.info()
    for sid in ea.streams.info():
        assert ea.streams.text(sid) == eb.streams.text(sid)
    assert ea.usage("tier") == eb.usage("tier") and ea.usage("ticket") == eb.usage("ticket")

    def events(eng):
        return collections.Counter(
            (e.type, getattr(e, "stream_id", ""), getattr(e, "status", ""),
             e.text if isinstance(e, StreamChunk) else "")
            for e in eng.inbox.drain() if not isinstance(e, WorkersChanged))
    assert events(ea) == events(eb)
    assert (wa / "src/b.py").read_text() == (wb / "src/b.py").read_text()


def test_serve_forever_refuses_a_busy_port_cleanly(workspace, capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        rc = hook_server.serve_forever(workspace, fast_settings(), port=busy.getsockname()[1])
    finally:
        busy.close()
    assert rc == 2
    err = capsys.readouterr().err
    assert "could not start" in err and "Traceback" not in err
    assert not (workspace / ".clutch/api.json").exists()
