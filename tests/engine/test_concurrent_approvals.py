"""Approvals from 8 workers at once, answered in random order, half from the GUI's side (the
engine's thread-safe resolve on another thread) and half over the API: each decision reaches
the right worker exactly once."""
from __future__ import annotations

import random
import threading

from conftest import fast_settings, wait_for
from models import Approved, Denied, Ticket, TrackProposal


def test_eight_workers_answered_from_gui_thread_and_api(workspace):
    import hook_server
    from multi_agent_conductor import ConductorEngine
    rng = random.Random(11)
    ids = [f"T-{i:03d}" for i in range(1, 9)]
    with ConductorEngine(workspace, fast_settings(max_workers=8), auto_approve=False) as eng:
        server = hook_server.start_for_engine(eng)
        try:
            client = hook_server.ApiClient(server.url, server.token)
            [tr] = eng.accept_tracks([TrackProposal(title="C", goal="g",
                                                    acceptance_criteria=["c"])]).result(10)
            eng.set_tickets(tr.id, [Ticket(id=i, description=f"work {i}",
                                           target_files=[f"out/{i}.txt"]) for i in ids]).result(10)
            fut = eng.start_track(tr.id)
            answered: dict[str, str] = {}
            lock = threading.Lock()

            def edit(req):
                if req.kind == "spawn":   # each spawn names its own ticket in the prompt
                    return {"prompt": req.payload.prompt + f"\nNOTE: approved for {req.ticket_id}\n"}
                if req.kind == "tool" and req.payload.tool == "write_file":
                    args = dict(req.payload.args)
                    args["content"] = f"content for {req.ticket_id}\nSTATUS: draft\n"
                    return {"tool": "write_file", "args": args}
                return None

            def answer(via_api: bool):
                while not fut.done():
                    pending = client.state()["pending_approvals"] if via_api else \
                        [r.model_dump() for r in eng.pending_approvals()]
                    rng_local = random.Random(len(pending) + (7 if via_api else 3))
                    rng_local.shuffle(pending)
                    for p in pending:
                        from models import ApprovalRequest
                        req = ApprovalRequest.model_validate(p)
                        # odd tickets are answered over the API, even ones from the GUI side
                        if (int(req.ticket_id[-1]) % 2 == 1) != via_api:
                            continue
                        with lock:
                            if req.id in answered:
                                continue
                            answered[req.id] = "api" if via_api else "gui"
                        if via_api:
                            client.approve(req.id, payload=edit(req))
                        else:
                            eng.resolve(req.id, Approved(edits=edit(req)))
            # all 8 spawns are pending at the same moment before anyone answers
            wait_for(lambda: len(eng.pending_approvals()) == 8, what="8 spawn approvals at once")
            threads = [threading.Thread(target=answer, args=(v,), daemon=True) for v in (True, False)]
            for t in threads:
                t.start()
            track = fut.result(60)
            for t in threads:
                t.join(10)
        finally:
            server.stop()
        entries = eng.comms.entries()
    assert all(t.status == "completed" for t in track.tickets)
    assert {"api", "gui"} == set(answered.values())
    assert list(answered.values()).count("api") >= 8 and list(answered.values()).count("gui") >= 8
    decisions = [e for e in entries if e["kind"] == "approval"]
    assert sorted(e["data"]["approval_id"] for e in decisions) == sorted(answered)  # once each
    for tid in ids:
        first = next(e for e in entries if e["kind"] == "request" and e["ticket_id"] == tid)
        assert f"NOTE: approved for {tid}" in first["data"]["messages"][0]["text"]
        assert "approved for" not in first["data"]["messages"][0]["text"].replace(
            f"approved for {tid}", "")
        assert (workspace / f"out/{tid}.txt").read_text().startswith(f"content for {tid}")


def test_a_question_posted_as_the_loop_stops_is_answered_by_the_closing(tmp_path):
    """A worker thread that asks just as the app closes (its loop stopped, so the question is
    never run) must not wait forever: it would hold the interpreter's exit (a whole test run
    once hung at its end on such a thread). The question is closed, not left for the garbage
    collector to report as a coroutine never awaited."""
    import asyncio as _asyncio
    import gc
    import time as _time
    import warnings

    from ai_client import CommsLog
    from engine.approvals import ApprovalBroker
    from models import ApprovalRequest, SpawnPayload
    loop = _asyncio.new_event_loop()           # never run: like one that has just stopped
    broker = ApprovalBroker(CommsLog(tmp_path / "c.jsonl"), lambda ev: None, lambda: True)
    broker.loop = loop
    t0 = _time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = broker.ask_from_thread(ApprovalRequest(kind="spawn", title="t", stream_id="s",
                                                   payload=SpawnPayload(prompt="p")))
        loop.close()
        gc.collect()
    assert not d.approved and d.reason == "the app is closing"
    assert _time.monotonic() - t0 < 5
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_a_question_asked_after_the_loop_closed_is_answered_by_the_closing(tmp_path):
    """The app closed between a worker's last step and its next question: the loop is closed,
    so the question cannot even be posted. The closing answers it, and nothing is left
    behind as a coroutine never awaited."""
    import asyncio as _asyncio
    import gc
    import warnings

    from ai_client import CommsLog
    from engine.approvals import ApprovalBroker
    from models import ApprovalRequest, SpawnPayload
    loop = _asyncio.new_event_loop()
    loop.close()
    broker = ApprovalBroker(CommsLog(tmp_path / "c.jsonl"), lambda ev: None, lambda: True)
    broker.loop = loop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = broker.ask_from_thread(ApprovalRequest(kind="spawn", title="t", stream_id="s",
                                                   payload=SpawnPayload(prompt="p")))
        gc.collect()
    assert not d.approved and d.reason == "the app is closing"
    assert not [w for w in caught if "never awaited" in str(w.message)]
