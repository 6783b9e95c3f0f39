"""The engine end to end on the offline model: the event path, the scheduler, approvals,
exact token accounting, failures, resume."""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from pathlib import Path

import pytest

from ai_client import (FunctionProvider, ModelRequest, ModelResponse, OfflineProvider, PlanError,
                       ToolCall, usage_from_entries)
from conftest import Approver, fast_settings, wait_for
from events import (AsyncEventQueue, ErrorEvent, StatusChange, StreamChunk, StreamEnd,
                    put_threadsafe)
from models import Approved, Denied, DagError, Ticket, Usage


def tickets(*specs):
    """specs: (id, deps, files)"""
    return [Ticket(id=i, description=f"work on {i}", depends_on=list(d), target_files=list(f))
            for i, d, f in specs]


def new_track(engine, ts, title="Core: test track"):
    from models import TrackProposal
    [track] = engine.accept_tracks([TrackProposal(title=title, goal="g",
                                                  acceptance_criteria=["c"])]).result(10)
    engine.set_tickets(track.id, ts).result(10)
    return track.id


class Recording:
    """Wraps a provider: records each call's reported usage and its start/end times."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.lock = threading.Lock()
        self.calls = []   # (tier, ticket_id, start, end, usage)

    def generate(self, req, on_chunk, on_retry=None):
        t0 = time.monotonic()
        resp = self.inner.generate(req, on_chunk, on_retry)
        with self.lock:
            self.calls.append((req.tier, req.ticket_id, t0, time.monotonic(), resp.usage))
        return resp


# ---------------------------------------------------------------------------------------------
# the event path (the seed's own bug, guarded)
# ---------------------------------------------------------------------------------------------

def test_worker_stream_reaches_inbox_through_executor_and_queue(make_engine):
    eng = make_engine()
    tid = new_track(eng, tickets(("T-001", [], ["a.py"])))
    eng.start_track(tid).result(30)
    evts = eng.inbox.drain()
    chunks = [e for e in evts if isinstance(e, StreamChunk) and e.stream_id == "Tier 3 (Worker): T-001"]
    assert chunks, "no chunk of the worker's stream reached the inbox"
    assert "T-001" in "".join(c.text for c in chunks)
    assert any(isinstance(e, StreamEnd) and e.stream_id == "Tier 3 (Worker): T-001"
               and e.state == "done" for e in evts)
    # the worker ran in an executor thread, not on the loop
    assert eng.track(tid).ticket("T-001").status == "completed"


def test_put_from_a_pool_thread_without_a_loop_raises():
    loop = asyncio.new_event_loop()
    try:
        q = AsyncEventQueue(loop)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(put_threadsafe, q, StreamChunk(stream_id="s", text="x"), None)
            with pytest.raises(RuntimeError, match="no event loop"):
                fut.result(5)
            # and the queue's own put_nowait refuses the wrong thread
            fut2 = pool.submit(q.put_nowait, StreamChunk(stream_id="s", text="x"))
            with pytest.raises(RuntimeError, match="off the queue's loop thread"):
                fut2.result(5)
    finally:
        loop.close()


def test_worker_exception_reaches_inbox_and_fails_the_ticket(make_engine):
    offline = OfflineProvider(pace_s=0)

    def fn(req: ModelRequest):
        if req.tier == "Tier 3" and req.ticket_id == "T-002":
            raise RuntimeError("disk on fire")
        return offline.generate(req, lambda s: None)
    eng = make_engine(provider=FunctionProvider(fn))
    tid = new_track(eng, tickets(("T-001", [], ["a.py"]), ("T-002", [], ["b.py"]),
                                 ("T-003", ["T-002"], ["c.py"]), ("T-004", ["T-001"], ["d.py"])))
    track = eng.start_track(tid).result(30)
    st = {t.id: t for t in track.tickets}
    assert st["T-002"].status == "failed" and "disk on fire" in st["T-002"].blocked_reason
    assert st["T-003"].status == "blocked" and "T-002" in st["T-003"].blocked_reason
    assert st["T-001"].status == st["T-004"].status == "completed"
    assert track.status == "failed"
    evts = eng.inbox.drain()
    errs = [e for e in evts if isinstance(e, ErrorEvent)]
    assert any(e.stream_id == "Tier 3 (Worker): T-002" and "disk on fire" in e.message for e in errs)
    # Tier 4 diagnosed the failure on its own stream
    assert eng.streams.text("Tier 4 (QA): T-002")
    assert any(e["kind"] == "error" and e["ticket_id"] == "T-002" for e in eng.comms.entries())


# ---------------------------------------------------------------------------------------------
# scheduling and exact accounting under parallelism
# ---------------------------------------------------------------------------------------------

def test_parallel_workers_exact_accounting_and_edges(make_engine, workspace):
    rec = Recording(OfflineProvider(pace_s=0.002, latency_s=0.03))
    eng = make_engine(provider=rec, max_workers=4)
    ts = tickets(("T-001", [], ["p/a.py"]), ("T-002", ["T-001"], ["p/b.py"]),
                 ("T-003", ["T-001"], ["p/c.py"]), ("T-004", ["T-001"], ["p/d.py"]),
                 ("T-005", ["T-001"], ["p/e.py"]), ("T-006", ["T-002", "T-003"], ["p/f.py"]))
    tid = new_track(eng, ts)
    track = eng.start_track(tid).result(60)
    assert all(t.status == "completed" for t in track.tickets), track.tickets

    # edges respected: a ticket's first call starts after its dependencies' last call ended
    spans = {}
    for tier, tk, a, b, _ in rec.calls:
        if tier == "Tier 3":
            s = spans.setdefault(tk, [a, b])
            s[0], s[1] = min(s[0], a), max(s[1], b)
    for t in ts:
        for d in t.depends_on:
            assert spans[t.id][0] >= spans[d][1], f"{t.id} started before {d} ended"
    # real overlap: T-002..T-005 ran at the same time (measured, not assumed)
    mids = ["T-002", "T-003", "T-004", "T-005"]
    overlap = min(spans[m][1] for m in mids) - max(spans[m][0] for m in mids)
    assert overlap > 0, "the four independent tickets never ran concurrently"

    # exact accounting: per-tier usage == sum of what the provider reported per call
    reported = {}
    for tier, *_rest, u in rec.calls:
        reported[tier] = reported.get(tier, Usage()) + u
    by_tier = eng.usage("tier")
    assert by_tier["Tier 3"].total_tokens == reported["Tier 3"].total_tokens > 0
    assert by_tier["Tier 3"].requests == len([c for c in rec.calls if c[0] == "Tier 3"])
    # ... == the sum over comms.jsonl on disk
    lines = (eng.session_dir / "comms.jsonl").read_text().splitlines()
    on_disk = usage_from_entries([json.loads(l) for l in lines])
    assert on_disk["Tier 3"] == by_tier["Tier 3"]
    # per ticket sums add up to the tier
    per_ticket = eng.usage("ticket")
    assert sum(per_ticket[t.id].total_tokens for t in ts) == by_tier["Tier 3"].total_tokens


def test_whole_epic_all_tiers_nonzero(make_engine, workspace):
    eng = make_engine(max_workers=4)
    plan = eng.plan_epic("Add a health endpoint with its tests, and document it").result(30)
    assert len(plan.tracks) >= 2
    tracks = eng.accept_tracks(plan.tracks).result(10)
    for t in tracks:
        eng.plan_track(t.id).result(30)
    futs = [eng.start_track(t.id) for t in tracks]
    done = [f.result(60) for f in futs]
    assert all(t.status == "completed" for t in done)
    u = eng.usage("tier")
    for tier in ("Tier 1", "Tier 2", "Tier 3"):
        assert u[tier].total_tokens > 0 and u[tier].requests > 0
    # every worker wrote its files inside the workspace: a new file written and reviewed, the
    # existing README edited in place (its first line kept, the ticket's change added)
    readme = (workspace / "README.md").read_text()
    for t in done:
        for k in t.tickets:
            for f in k.target_files:
                text = (workspace / f).read_text()
                if f == "README.md":
                    assert text.startswith("# demo workspace\n") and k.id in text, text
                else:
                    assert "STATUS: reviewed" in text, (f, text)
            assert eng.streams.text(f"Tier 3 (Worker): {k.id}")
    assert any("README.md" in k.target_files for t in done for k in t.tickets), readme
    # ticket ids are unique across tracks (they name streams)
    ids = [k.id for t in done for k in t.tickets]
    assert len(ids) == len(set(ids))


def test_offline_model_is_deterministic():
    from models import EpicPlan
    p = OfflineProvider(pace_s=0)
    req = ModelRequest(tier="Tier 1", model="offline", system="s",
                       messages=[__import__("ai_client").Message(role="user", text="EPIC:\nBuild a CLI\n")])
    a = p.generate(req, lambda s: None)
    b = p.generate(req, lambda s: None)
    assert a.text == b.text and a.usage == b.usage
    EpicPlan.model_validate_json(a.text)


# ---------------------------------------------------------------------------------------------
# approvals
# ---------------------------------------------------------------------------------------------

def test_edited_spawn_prompt_and_tool_args_are_what_runs(make_engine, workspace):
    eng = make_engine(auto_approve=False)
    tid = new_track(eng, tickets(("T-001", [], ["src/app.py"])))

    def decide(req):
        if req.kind == "spawn":
            p = req.payload.model_dump(include={"prompt", "context", "model"})
            p["prompt"] = p["prompt"].replace("TARGET FILES: src/app.py", "TARGET FILES: src/edited.py")
            return Approved(edits=p)
        if req.kind == "tool" and req.payload.tool == "write_file":
            args = dict(req.payload.args)
            args["content"] = args["content"] + "# edited by the user\n"
            return Approved(edits={"tool": "write_file", "args": args})
        return Approved()
    ap = Approver(eng, decide)
    ap.start()
    try:
        track = eng.start_track(tid).result(30)
    finally:
        ap.stop.set()
    assert track.tickets[0].status == "completed"
    # the edited prompt is what the worker received (first request of its session)
    reqs = [e for e in eng.comms.entries() if e["kind"] == "request" and e["ticket_id"] == "T-001"]
    assert "TARGET FILES: src/edited.py" in reqs[0]["data"]["messages"][0]["text"]
    # ... so the worker wrote the edited file, with the edited content
    assert not (workspace / "src/app.py").exists()
    assert "# edited by the user" in (workspace / "src/edited.py").read_text()
    kinds = {r.kind for r in ap.seen}
    assert {"spawn", "tool", "shell"} <= kinds
    decisions = [e for e in eng.comms.entries() if e["kind"] == "approval"]
    assert len(decisions) == len(ap.seen)


def test_rejected_spawn_skips_the_ticket_with_the_reason(make_engine):
    eng = make_engine(auto_approve=False)
    tid = new_track(eng, tickets(("T-001", [], ["a.py"]), ("T-002", ["T-001"], ["b.py"])))
    ap = Approver(eng, lambda r: Denied(reason="not today")
                  if r.ticket_id == "T-001" else Approved())
    ap.start()
    try:
        track = eng.start_track(tid).result(30)
    finally:
        ap.stop.set()
    t1 = track.ticket("T-001")
    assert t1.status == "skipped" and "not today" in t1.blocked_reason
    assert not any(e["kind"] == "spawn" and e["ticket_id"] == "T-001" for e in eng.comms.entries())


def test_rejected_shell_command_does_not_run(make_engine, workspace):
    eng = make_engine(auto_approve=False)
    tid = new_track(eng, tickets(("T-001", [], ["x.txt"])))

    def decide(req):
        if req.kind == "shell":
            return Denied(reason="no shell")
        return Approved()
    Approver.run_track(eng, tid, decide, timeout=30)
    results = [e for e in eng.comms.entries() if e["kind"] == "tool_result"
               and e["data"]["name"] == "run_shell"]
    assert results and results[0]["data"]["result"]["rejected"] is True
    assert "exit_code" not in results[0]["data"]["result"]


def test_many_approvals_at_once_none_lost(make_engine):
    eng = make_engine(auto_approve=False, max_workers=6)
    ids = [f"T-{i:03d}" for i in range(1, 7)]
    tid = new_track(eng, tickets(*[(i, [], [f"f{i}.txt"]) for i in ids]))
    fut = eng.start_track(tid)
    pending = wait_for(lambda: len(eng.pending_approvals()) == 6 and eng.pending_approvals(),
                       what="six spawn approvals pending at once")
    assert sorted(r.ticket_id for r in pending) == ids
    # answer in reverse order; then approve everything else as it comes
    for r in reversed(pending):
        eng.resolve(r.id, Approved())
    ap = Approver(eng, lambda r: Approved())
    ap.start()
    try:
        track = fut.result(30)
    finally:
        ap.stop.set()
    assert all(t.status == "completed" for t in track.tickets)
    spawns = [e["ticket_id"] for e in eng.comms.entries() if e["kind"] == "spawn"]
    assert sorted(spawns) == ids


def test_answering_twice_and_unknown_ids(make_engine):
    from multi_agent_conductor import ApprovalAlreadyResolved, ApprovalNotFound
    eng = make_engine(auto_approve=False)
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"])))
    fut = eng.start_track(tid)
    [req] = wait_for(lambda: eng.pending_approvals(), what="a spawn approval")
    eng.resolve(req.id, Denied(reason="r"))
    with pytest.raises(ApprovalAlreadyResolved):
        eng.resolve(req.id, Approved())
    with pytest.raises(ApprovalNotFound):
        eng.resolve("A-nope", Approved())
    assert fut.result(10).ticket("T-001").status == "skipped"


# ---------------------------------------------------------------------------------------------
# invalid plans, DAG errors, sandbox through the engine
# ---------------------------------------------------------------------------------------------

def test_invalid_tier1_json_gets_one_repair_round(make_engine):
    offline = OfflineProvider(pace_s=0)
    calls = []

    def fn(req):
        calls.append(req)
        if req.tier == "Tier 1" and len(calls) == 1:
            return "Sure! Here are some tracks: (not json)"
        return offline.generate(req, lambda s: None)
    eng = make_engine(provider=FunctionProvider(fn))
    plan = eng.plan_epic("Build a thing").result(10)
    assert plan.tracks
    assert "not valid" in calls[1].messages[-1].text and "not JSON" in calls[1].messages[-1].text


def test_invalid_tier1_json_twice_is_a_clear_failure(make_engine):
    eng = make_engine(provider=FunctionProvider(lambda r: '{"tracks": []}'))
    with pytest.raises(PlanError, match="answered twice.*not a valid plan"):
        eng.plan_epic("Build a thing").result(10)
    evts = eng.inbox.drain()
    assert any(isinstance(e, ErrorEvent) and e.stream_id == "Tier 1 (Orchestrator)" for e in evts)
    assert eng.streams.info()["Tier 1 (Orchestrator)"]["state"] == "failed"


def test_tier2_cycle_is_repaired_or_refused(make_engine):
    bad = json.dumps({"tickets": [{"id": "T-001", "description": "a", "depends_on": ["T-002"]},
                                  {"id": "T-002", "description": "b", "depends_on": ["T-001"]}]})
    eng = make_engine(provider=FunctionProvider(lambda r: bad))
    from models import TrackProposal
    [t] = eng.accept_tracks([TrackProposal(title="X", goal="g", acceptance_criteria=["c"])]).result(10)
    with pytest.raises(PlanError, match="cycle: T-00"):
        eng.plan_track(t.id).result(10)


def test_set_tickets_refuses_a_bad_graph(make_engine):
    eng = make_engine()
    tid = new_track(eng, tickets(("T-001", [], [])))
    with pytest.raises(DagError, match="unknown ticket 'T-404'"):
        eng.set_tickets(tid, tickets(("T-001", ["T-404"], [])))
    assert [t.id for t in eng.track(tid).tickets] == ["T-001"]   # nothing lost


def test_empty_and_huge_epics_are_refused_clearly(make_engine):
    from multi_agent_conductor import EngineError
    eng = make_engine()
    with pytest.raises(EngineError, match="empty"):
        eng.plan_epic("   \n")
    with pytest.raises(EngineError, match="limit is 100,000"):
        eng.plan_epic("x" * 1_000_000)


def test_worker_cannot_escape_the_workspace(make_engine, workspace, tmp_path):
    outside = tmp_path / "outside.txt"

    def fn(req):
        if req.tier != "Tier 3":
            return OfflineProvider(pace_s=0).generate(req, lambda s: None)
        if sum(m.role == "model" for m in req.messages) == 0:
            return ModelResponse(text="try", tool_calls=[
                ToolCall("c1", "write_file", {"path": "../outside.txt", "content": "pwned"}),
                ToolCall("c2", "read_file", {"path": "/etc/passwd"})],
                usage=Usage(input_tokens=1, output_tokens=1, total_tokens=2, requests=1))
        return "done"
    eng = make_engine(provider=FunctionProvider(fn))
    tid = new_track(eng, tickets(("T-001", [], [])))
    eng.start_track(tid).result(10)
    assert not outside.exists()
    results = [e["data"]["result"] for e in eng.comms.entries() if e["kind"] == "tool_result"]
    assert len(results) == 2 and all(r["ok"] is False and r["error"] for r in results)
    assert "root:" not in json.dumps(results)


# ---------------------------------------------------------------------------------------------
# cancel, retry, skip, pause, budget, resume
# ---------------------------------------------------------------------------------------------

def test_cancel_a_running_ticket_then_retry(make_engine):
    gate = threading.Event()
    offline = OfflineProvider(pace_s=0)

    def fn(req):
        if req.ticket_id == "T-001" and not gate.is_set():
            gate.wait(10)
        return offline.generate(req, lambda s: None)

    class Slow(FunctionProvider):
        def generate(self, req, on_chunk, on_retry=None):
            r = fn(req)
            on_chunk(r.text or " ")
            return r
    eng = make_engine(provider=Slow(fn))
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"]), ("T-002", ["T-001"], ["b.txt"]),
                                 ("T-003", [], ["c.txt"])))
    fut = eng.start_track(tid)
    wait_for(lambda: eng.track(tid).ticket("T-001").status == "in_progress", what="T-001 running")
    eng.cancel_ticket("T-001")
    gate.set()
    track = fut.result(10)
    assert track.ticket("T-001").status == "cancelled"
    assert track.ticket("T-002").status == "blocked"
    assert track.ticket("T-003").status == "completed"
    applied = eng.retry_ticket("T-001").result(10)
    assert applied.ticket("T-001").status in ("todo", "in_progress") and applied.status == "in_progress"
    assert applied.ticket("T-001").retry_count == 1
    track = eng.track_run(tid).result(10)
    assert track.ticket("T-001").status == "completed" and track.ticket("T-001").retry_count == 1
    assert track.ticket("T-002").status == "completed"
    assert track.status == "completed"


def test_skip_unblocks_dependents(make_engine):
    eng = make_engine(provider=FunctionProvider(
        lambda r: (_ for _ in ()).throw(RuntimeError("boom")) if r.ticket_id == "T-001" and r.tier == "Tier 3"
        else OfflineProvider(pace_s=0).generate(r, lambda s: None)))
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"]), ("T-002", ["T-001"], ["b.txt"])))
    assert eng.start_track(tid).result(10).ticket("T-002").status == "blocked"
    eng.skip_ticket("T-001").result(10)
    assert eng.track(tid).ticket("T-002").status == "todo"
    assert eng.start_track(tid).result(10).ticket("T-002").status == "completed"


def test_pause_starts_nothing_new_and_resume_finishes(make_engine):
    eng = make_engine(auto_approve=False, max_workers=1)
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"]), ("T-002", [], ["b.txt"])))
    fut = eng.start_track(tid)
    [req] = wait_for(lambda: eng.pending_approvals(), what="first spawn approval")
    eng.pause_track(tid)
    eng.resolve(req.id, Approved())
    ap = Approver(eng, lambda r: Approved() if r.ticket_id == "T-001"
                  else Approved())
    ap.start()
    try:
        wait_for(lambda: eng.track(tid).ticket("T-001").status == "completed", what="T-001 done")
        time.sleep(0.2)
        assert eng.track(tid).ticket("T-002").status == "todo"   # paused: not started
        assert eng.track(tid).status == "paused"
        eng.resume_track(tid)
        track = fut.result(10)
    finally:
        ap.stop.set()
    assert track.status == "completed"


def test_budget_reached_pauses_and_asks(make_engine):
    from models import Price
    eng = make_engine(auto_approve=False, budget_tokens=1)
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"])))
    seen = []

    def decide(req):
        seen.append(req.kind)
        if req.kind == "budget":
            return Denied(reason="too expensive")
        return Approved()
    track = Approver.run_track(eng, tid, decide, timeout=10)
    # the first request goes out (nothing spent yet); the second asks and is refused
    assert "budget" in seen
    assert track.ticket("T-001").status == "failed"
    assert "budget" in track.ticket("T-001").blocked_reason


def test_resume_after_interruption_does_not_rerun_completed(workspace):
    from multi_agent_conductor import ConductorEngine
    gate = threading.Event()
    offline = OfflineProvider(pace_s=0)

    def fn(req):
        if req.ticket_id == "T-003":
            gate.wait(10)
        return offline.generate(req, lambda s: None)
    eng = ConductorEngine(workspace, fast_settings(max_workers=2), provider=FunctionProvider(fn),
                          auto_approve=True).start()
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"]), ("T-002", ["T-001"], ["b.txt"]),
                                 ("T-003", ["T-001"], ["c.txt"]), ("T-004", ["T-003"], ["d.txt"])))
    eng.start_track(tid)
    wait_for(lambda: eng.track(tid).ticket("T-002").status == "completed"
             and eng.track(tid).ticket("T-003").status == "in_progress", what="mid-run")
    eng.close()   # interrupted mid-ticket
    gate.set()
    eng2 = ConductorEngine(workspace, fast_settings(), provider=OfflineProvider(pace_s=0),
                           auto_approve=True, resume=True).start()
    try:
        t = eng2.track(tid)
        assert t.ticket("T-001").status == "completed" and t.ticket("T-003").status == "todo"
        track = eng2.start_track(tid).result(20)
        assert all(k.status == "completed" for k in track.tickets)
        spawns = [e["ticket_id"] for e in eng2.comms.entries() if e["kind"] == "spawn"]
        assert spawns.count("T-001") == 1 and spawns.count("T-002") == 1   # same session log
        assert spawns.count("T-004") == 1
        plan = (workspace / "conductor/tracks" / tid / "plan.md").read_text()
        assert plan.count("[x]") == 4
    finally:
        eng2.close()


def test_an_edited_payload_of_the_wrong_shape_is_refused_and_stays_pending(make_engine):
    from multi_agent_conductor import EngineError
    eng = make_engine(auto_approve=False)
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"])))
    fut = eng.start_track(tid)
    [req] = wait_for(lambda: eng.pending_approvals(), what="a spawn approval")
    with pytest.raises(EngineError, match="'prompt' in the edited payload must be str"):
        eng.resolve(req.id, Approved(edits={"prompt": 42}))
    with pytest.raises(EngineError, match="prompt is empty"):
        eng.resolve(req.id, Approved(edits={"prompt": "  "}))
    assert [r.id for r in eng.pending_approvals()] == [req.id]     # nothing lost
    eng.resolve(req.id, Denied(reason="changed my mind"))
    assert fut.result(10).ticket("T-001").status == "skipped"


def test_shell_never_runs_without_approval_unless_allowlisted(make_engine, workspace):
    from models import ApprovalPolicy

    def run(policy):
        eng = make_engine(auto_approve=False, approvals=policy)
        tid = new_track(eng, tickets((f"T-{len(policy.shell_allowlist) + 1:03d}", [], ["a.py"])))
        asked = []
        ap = Approver(eng, lambda r: (asked.append(r.kind), Approved())[1])
        ap.start()
        try:
            eng.start_track(tid).result(30)
        finally:
            ap.stop.set()
        return asked
    # the offline worker checks its work with `python3 -m py_compile ... && echo compiled`
    assert "shell" in run(ApprovalPolicy())
    assert "shell" in run(ApprovalPolicy(shell_allowlist=["python3"]))   # compound: asks


def test_an_allowlisted_simple_command_runs_without_asking(make_engine):
    from models import ApprovalPolicy

    def fn(req):
        if req.tier != "Tier 3":
            return OfflineProvider(pace_s=0).generate(req, lambda s: None)
        if not any(m.role == "model" for m in req.messages):
            return ModelResponse(text="", tool_calls=[ToolCall("c", "run_shell", {"command": "ls -a"})],
                                 usage=Usage(input_tokens=1, output_tokens=1, total_tokens=2, requests=1))
        return "done"
    eng = make_engine(provider=FunctionProvider(fn), auto_approve=False,
                      approvals=ApprovalPolicy(spawn="auto", shell_allowlist=["ls"]))
    tid = new_track(eng, tickets(("T-001", [], [])))
    asked = []
    ap = Approver(eng, lambda r: (asked.append(r.kind), Approved())[1])
    ap.start()
    try:
        eng.start_track(tid).result(10)
    finally:
        ap.stop.set()
    assert asked == []
    [res] = [e["data"]["result"] for e in eng.comms.entries() if e["kind"] == "tool_result"]
    assert res["ok"] and res["exit_code"] == 0


def test_cancel_while_the_spawn_waits_cancels_and_blocks_dependents(make_engine):
    eng = make_engine(auto_approve=False)
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"]), ("T-002", ["T-001"], ["b.txt"])))
    fut = eng.start_track(tid)
    wait_for(lambda: eng.pending_approvals(), what="the spawn approval")
    eng.cancel_ticket("T-001")
    track = fut.result(10)
    assert track.ticket("T-001").status == "cancelled"
    assert track.ticket("T-002").status == "blocked"
    assert not eng.pending_approvals()


def test_a_finished_worker_keeps_its_context_figures_not_its_history(make_engine):
    eng = make_engine()
    tid = new_track(eng, tickets(("T-001", [], ["a.py"])))
    eng.start_track(tid).result(30)
    st = eng.bleed_stats("Tier 3 (Worker): T-001")
    assert st["used_tokens"] > 0 and st["messages"] > 2 and st["level"] == "green"
    assert isinstance(eng._sessions["Tier 3 (Worker): T-001"], dict)   # history released


# ---------------------------------------------------------------------------------------------
# a ticket's life in its own executor thread: reports, bugs, the writer's pauses
# ---------------------------------------------------------------------------------------------

def test_a_completion_is_on_disk_before_it_is_reported(make_engine, workspace):
    """Each 'completed' status the GUI hears of is already in state.toml: a consumer reading
    the file at the moment it receives the event finds the ticket completed there."""
    import tomllib
    eng = make_engine(provider=FunctionProvider(lambda req: "done"), max_workers=4)
    specs = [(f"T-{i:03d}", [f"T-{i - 4:03d}"] if i > 4 else [], []) for i in range(1, 41)]
    tid = new_track(eng, tickets(*specs))
    state = workspace / "conductor" / "tracks" / tid / "state.toml"
    seen: dict[str, str] = {}
    stop = threading.Event()

    def consume():
        while not stop.is_set():
            for e in eng.inbox.drain():
                if isinstance(e, StatusChange) and e.ticket_id and e.status == "completed":
                    on_disk = {t["id"]: t["status"]
                               for t in tomllib.loads(state.read_text())["tickets"]}
                    seen[e.ticket_id] = on_disk[e.ticket_id]
            time.sleep(0.001)
    th = threading.Thread(target=consume)
    th.start()
    try:
        track = eng.start_track(tid).result(60)
        wait_for(lambda: len(seen) == 40, what="40 completions reported")
    finally:
        stop.set()
        th.join(10)
    assert all(t.status == "completed" for t in track.tickets)
    assert seen == {f"T-{i:03d}": "completed" for i in range(1, 41)}


class _Bug(BaseException):
    """Not an Exception: escapes the worker's own handling, as a bug in the engine would."""


def test_a_bug_in_a_tickets_thread_fails_that_ticket_and_the_track_goes_on(make_engine):
    def fn(req: ModelRequest):
        if req.ticket_id == "T-002":
            raise _Bug("a bug, not a model error")
        return "done"
    eng = make_engine(provider=FunctionProvider(fn))
    tid = new_track(eng, tickets(("T-001", [], []), ("T-002", [], []), ("T-003", ["T-002"], []),
                                 ("T-004", ["T-001"], [])))
    track = eng.start_track(tid).result(30)
    st = {t.id: t for t in track.tickets}
    assert st["T-002"].status == "failed"
    assert st["T-002"].blocked_reason == "internal error: _Bug: a bug, not a model error"
    assert st["T-003"].status == "blocked" and "T-002" in st["T-003"].blocked_reason
    assert st["T-001"].status == st["T-004"].status == "completed"
    assert track.status == "failed" and eng.workers()["active"] == 0
    evts = eng.inbox.drain()
    assert any(isinstance(e, ErrorEvent) and e.ticket_id == "T-002" and "internal error" in e.message
               for e in evts)
    errors = [e for e in eng.comms.entries() if e["kind"] == "error" and e["ticket_id"] == "T-002"]
    assert len(errors) == 1 and "_Bug" in errors[0]["data"]["trace"]


def test_a_finished_track_does_not_wait_out_the_writers_pause(make_engine, workspace):
    """A slow disk makes the writer pause between passes (at least 3x a pass); the track's
    final flush cuts the pause short instead of waiting it out."""
    from conductor_store import ConductorStore

    class SlowStore(ConductorStore):
        def save_track(self, track):
            time.sleep(0.3)
            super().save_track(track)
    eng = make_engine(provider=FunctionProvider(lambda req: "done"))
    tid = new_track(eng, tickets(("T-001", [], []), ("T-002", ["T-001"], [])))
    eng.store = SlowStore(workspace)
    t0 = time.monotonic()
    track = eng.start_track(tid).result(30)
    took = time.monotonic() - t0
    assert [t.status for t in track.tickets] == ["completed", "completed"]
    # two passes of 0.3 s; waiting out the pause (>= 0.9 s) in between would take >= 1.5 s
    assert took < 1.2, f"the track took {took:.2f} s"
    on_disk = {t.id: t.status for t in ConductorStore(workspace).load_tracks()[0][0].tickets}
    assert on_disk == {"T-001": "completed", "T-002": "completed"}


def test_closing_while_a_spawn_waits_leaves_the_ticket_to_run_again(workspace):
    """The app closes with a spawn approval open: the ticket was interrupted, not rejected by
    the user, so it is todo on disk (not skipped, not cancelled) and runs after a restart."""
    from conductor_store import ConductorStore
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings(), auto_approve=False).start()
    tid = new_track(eng, tickets(("T-001", [], ["a.txt"]), ("T-002", ["T-001"], ["b.txt"])))
    eng.start_track(tid)
    wait_for(lambda: eng.pending_approvals(), what="the spawn approval")
    eng.close()
    [track], _ = ConductorStore(workspace).load_tracks()
    assert [(t.id, t.status, t.blocked_reason) for t in track.tickets] == [
        ("T-001", "todo", ""), ("T-002", "todo", "")]
    with ConductorEngine(workspace, fast_settings(), auto_approve=True) as again:
        done = again.start_track(tid).result(30)
    assert [t.status for t in done.tickets] == ["completed", "completed"]


def test_the_worker_cap_is_checked_and_a_full_house_leaves_room_to_plan(make_engine):
    """64 tickets waiting on their spawn approvals hold a thread each; planning another track
    (Tier 2) still runs at once."""
    from models import MAX_WORKERS, TrackProposal
    from multi_agent_conductor import EngineError
    eng = make_engine(auto_approve=False)
    for bad in (0, MAX_WORKERS + 1):
        with pytest.raises(EngineError, match=f"between 1 and {MAX_WORKERS}"):
            eng.set_max_workers(bad)
    eng.set_max_workers(MAX_WORKERS)
    assert eng.workers()["cap"] == MAX_WORKERS
    tid = new_track(eng, tickets(*[(f"T-{i:03d}", [], []) for i in range(1, MAX_WORKERS + 1)]))
    eng.start_track(tid)
    wait_for(lambda: len(eng.pending_approvals()) == MAX_WORKERS, timeout=30,
             what=f"{MAX_WORKERS} spawn approvals")
    [other] = eng.accept_tracks([TrackProposal(title="Docs: another track", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    planned = eng.plan_track(other.id).result(20)
    assert planned.tickets and len(eng.pending_approvals()) == MAX_WORKERS
