"""The engine side of the command sandbox (issue 15): the Workspace built from the settings, a
ticket's cancel reaching its running command, the shell rules deciding deny / ask / allow, the
time limit shown and honoured, the edited call shown on the stream, keys scrubbed from what the
engine itself shows and sends."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ai_client import FunctionProvider, ModelResponse, OfflineProvider, ToolCall
from conftest import Approver, git, wait_for
from events import ErrorEvent, LogEvent
from models import Approved, ApprovalPolicy, ShellRule, Ticket, TrackProposal, Usage
from test_worktree_runs import call, repo, scripted, track_with

U = Usage(input_tokens=1, output_tokens=1, total_tokens=2, requests=1)


def _track(eng, *ids: str) -> str:
    [track] = eng.accept_tracks([TrackProposal(title="Core: sandbox", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [Ticket(id=i, description=f"work on {i}") for i in ids]).result(10)
    return track.id


def _shell_once(args: dict, seen: list | None = None):
    """A provider whose Tier 3 worker runs one shell call, then says done."""
    def fn(req):
        if seen is not None:
            seen.append(req)
        if req.tier != "Tier 3":
            return OfflineProvider(pace_s=0).generate(req, lambda s: None)
        if not any(m.role == "model" for m in req.messages):
            return ModelResponse(text="", tool_calls=[ToolCall("c1", "run_shell", dict(args))],
                                 usage=U)
        return "done"
    return FunctionProvider(fn)


def _tool_results(eng) -> list[dict]:
    return [e["data"] for e in eng.comms_entries() if e["kind"] == "tool_result"]


def _processes_running(needle: bytes) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if needle in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue        # the process ended while we looked
    return pids


def test_the_workspace_is_built_from_the_sandbox_settings(make_engine):
    eng = make_engine(sandbox="none", shell_timeout_s=7.5)
    st = eng.sandbox_status()
    assert st.ready and st.mode == "none"
    assert eng.ws.shell_timeout_s == 7.5 and eng.ws.sandbox == "none"


def test_a_sandbox_that_cannot_run_is_a_notice_at_start(make_engine, monkeypatch, tmp_path):
    from tools import NOT_FOUND_MESSAGE
    monkeypatch.setenv("PATH", str(tmp_path))        # no bwrap on it
    eng = make_engine(sandbox="bwrap")
    assert not eng.sandbox_status().ready
    assert NOT_FOUND_MESSAGE in eng.notices
    shown = wait_for(lambda: [e for e in eng.inbox.drain()
                              if isinstance(e, LogEvent) and e.level == "warning"
                              and e.message == NOT_FOUND_MESSAGE], what="the notice")
    assert shown


def test_cancelling_a_ticket_ends_its_running_command_tree_at_once(make_engine):
    cmd = "sleep 25.37"
    eng = make_engine(provider=_shell_once({"command": cmd}), shell_timeout_s=60)
    tid = _track(eng, "T-001")
    fut = eng.start_track(tid)
    wait_for(lambda: _processes_running(b"sleep\x0025.37"), timeout=10, what="the command running")
    t0 = time.monotonic()
    eng.cancel_ticket("T-001").result(5)
    track = fut.result(10)
    took = time.monotonic() - t0
    assert track.ticket("T-001").status == "cancelled"
    assert took < 2.0, f"the ticket took {took:.2f}s to end after its cancel"
    wait_for(lambda: not _processes_running(b"sleep\x0025.37"), timeout=1.0,
             what="the command's process tree gone")


def test_a_denied_command_is_a_tool_error_naming_the_rule_and_nobody_is_asked(make_engine,
                                                                               workspace):
    (workspace / "build").mkdir()
    policy = ApprovalPolicy(spawn="auto", shell="ask",
                            rules=[ShellRule(program="rm", decision="deny",
                                             reason="never delete files")])
    eng = make_engine(provider=_shell_once({"command": "rm -rf build"}), auto_approve=False,
                      approvals=policy)
    tid = _track(eng, "T-001")
    ap = Approver(eng, lambda r: Approved())
    ap.start()
    try:
        assert eng.start_track(tid).result(10).ticket("T-001").status == "completed"
    finally:
        ap.stop.set()
    assert ap.seen == []
    [res] = _tool_results(eng)
    assert res["result"]["ok"] is False and res["result"].get("denied") is True
    assert "refuse" in res["result"]["error"] and "rm" in res["result"]["error"]
    assert res["result"]["rule"] in res["result"]["error"]
    assert (workspace / "build").is_dir()


def test_a_shell_question_shows_the_rule_and_limit_and_an_edit_runs_capped_and_shown(make_engine):
    eng = make_engine(provider=_shell_once({"command": "echo asked", "timeout": 300}),
                      auto_approve=False, approvals=ApprovalPolicy(spawn="auto", shell="ask"),
                      shell_timeout_s=5, sandbox="none")
    tid = _track(eng, "T-001")

    def decide(req):
        return Approved(payload=req.payload.model_copy(
            update={"command": "echo edited-run", "timeout_s": 900}))
    ap = Approver(eng, decide)
    ap.start()
    try:
        eng.start_track(tid).result(10)
    finally:
        ap.stop.set()
    [req] = ap.seen
    assert req.kind == "shell" and req.payload.command == "echo asked"
    assert req.payload.timeout_s == 5.0                  # what it would run under, not 300
    assert req.payload.rule and "echo" in req.payload.rule
    [res] = _tool_results(eng)
    assert res["args"]["command"] == "echo edited-run"
    assert res["args"]["timeout"] == 5.0                 # the edit, never above the setting
    assert res["result"]["ok"] and "edited-run" in res["result"]["output"]
    assert res["result"]["timeout_s"] == 5.0
    text = eng.stream_text("Tier 3 (Worker): T-001")
    edited_at = text.index("edited before it ran")
    assert "echo edited-run" in text[edited_at:]


def test_an_edited_shorter_time_limit_is_honoured(make_engine):
    eng = make_engine(provider=_shell_once({"command": "sleep 3; echo late"}),
                      auto_approve=False, approvals=ApprovalPolicy(spawn="auto", shell="ask"),
                      shell_timeout_s=30, sandbox="none")
    tid = _track(eng, "T-001")
    ap = Approver(eng, lambda r: Approved(payload=r.payload.model_copy(update={"timeout_s": 0.5})))
    ap.start()
    t0 = time.monotonic()
    try:
        eng.start_track(tid).result(20)
    finally:
        ap.stop.set()
    assert time.monotonic() - t0 < 2.8
    [res] = _tool_results(eng)
    assert res["args"]["timeout"] == 0.5 and res["result"]["ok"] is False
    assert "late" not in res["result"]["output"]


KEY = "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"


def test_keys_never_reach_tier4_the_ticket_or_the_error_events(make_engine, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    seen: list = []
    parts = [KEY[i:i + 10] for i in range(0, len(KEY), 10)]   # the command holds no whole piece
    cmd = "printf '%s' " + " ".join(parts) + "; echo; exit 3"
    eng = make_engine(provider=_shell_once({"command": cmd}, seen), sandbox="none")
    tid = _track(eng, "T-001")
    eng.start_track(tid).result(20)
    tier4 = [r for r in seen if r.tier == "Tier 4"]
    assert tier4, "a failed command is diagnosed by Tier 4"
    for r in tier4:
        assert KEY[:12] not in repr(r.messages) and KEY[-12:] not in repr(r.messages)

    def boom(req):
        if req.tier == "Tier 3":
            raise RuntimeError(f"the worker saw {KEY} somewhere")
        seen.append(req)
        return OfflineProvider(pace_s=0).generate(req, lambda s: None)
    eng2 = make_engine(provider=FunctionProvider(boom), sandbox="none")
    eng2.inbox.drain()
    seen.clear()
    tid2 = _track(eng2, "T-002")
    t = eng2.start_track(tid2).result(20).ticket("T-002")
    assert t.status == "failed" and "RuntimeError" in t.blocked_reason
    assert KEY[:12] not in t.blocked_reason + t.result
    errors = wait_for(lambda: [e for e in eng2.inbox.drain() if isinstance(e, ErrorEvent)],
                      what="the error event")
    assert all(KEY[:12] not in e.message for e in errors)
    assert all(KEY[:12] not in repr(r.messages) for r in seen if r.tier == "Tier 4")
    assert KEY[:12] not in eng.stream_text("Tier 3 (Worker): T-001")
    assert KEY[:12] not in eng2.stream_text("Tier 3 (Worker): T-002")


def test_tickets_in_worktrees_share_the_repositorys_probe_of_the_sandbox(make_engine, workspace,
                                                                         monkeypatch):
    """Each ticket's worktree gets a Workspace of its own; bwrap is started once to learn what
    it can do, not once more for every ticket's first command."""
    import toolbox.workspace as workspace_mod
    repo(workspace)
    probes = []
    real = workspace_mod.probe

    def counted(*a, **kw):
        probes.append(a)
        return real(*a, **kw)
    monkeypatch.setattr(workspace_mod, "probe", counted)
    steps = {f"T-00{i}": [call("run_shell", command=f"echo {i} > t{i}.txt"),
                          ModelResponse(text="done")] for i in (1, 2, 3)}
    eng = make_engine(provider=scripted(steps), git_commits=True, max_workers=3,
                      sandbox="bwrap")
    tid = track_with(eng, [Ticket(id=f"T-00{i}", description=f"t{i}") for i in (1, 2, 3)])
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed"] * 3, \
        [(k.id, k.blocked_reason) for k in track.tickets]
    assert len(probes) == 1
    assert [git(workspace, "show", f"main:t{i}.txt") for i in (1, 2, 3)] == ["1\n", "2\n", "3\n"]
