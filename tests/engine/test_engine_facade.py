"""The facade's contract: every command returns a future without waiting for the loop; the
typed read API the GUI and the API use instead of reaching into the engine's parts; each part
of the engine in a module of its own."""
from __future__ import annotations

import ast
import concurrent.futures
import threading
import time
from pathlib import Path

import pytest

from ai_client import FunctionProvider, OfflineProvider
from conftest import wait_for
from models import Ticket, TrackProposal

ROOT = Path(__file__).resolve().parents[2]


def _track(eng, specs) -> str:
    [track] = eng.accept_tracks([TrackProposal(title="Core: facade", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, [Ticket(id=i, description=f"work on {i}", depends_on=d,
                                      target_files=f) for i, d, f in specs]).result(10)
    return track.id


def _failing_first():
    failed: list[str] = []

    def fn(req):
        if req.tier == "Tier 3" and req.ticket_id == "T-001" and not failed:
            failed.append(req.ticket_id)
            raise RuntimeError("boom")
        return OfflineProvider(pace_s=0).generate(req, lambda s: None)
    return FunctionProvider(fn)


def _hold_loop(eng, seconds: float) -> threading.Event:
    """Keep the conductor's loop busy (a blocking callback on it); set when it has begun."""
    begun = threading.Event()

    def hold():
        begun.set()
        time.sleep(seconds)
    eng.loop.call_soon_threadsafe(hold)
    assert begun.wait(5)
    return begun


def test_ticket_commands_return_futures_and_never_wait_for_a_busy_loop(make_engine):
    eng = make_engine(provider=_failing_first())
    tid = _track(eng, [("T-001", [], ["a.txt"]), ("T-002", ["T-001"], ["b.txt"]),
                       ("T-003", [], ["c.txt"])])
    track = eng.start_track(tid).result(10)
    assert track.ticket("T-002").status == "blocked"
    _hold_loop(eng, 1.0)
    t0 = time.monotonic()
    skip = eng.skip_ticket("T-001", "not needed")
    assert time.monotonic() - t0 < 0.3, "skip_ticket waited for the loop"
    assert isinstance(skip, concurrent.futures.Future) and not skip.done()
    assert skip.result(10) is None
    assert eng.track(tid).ticket("T-001").status == "skipped"
    assert eng.track(tid).ticket("T-002").status == "todo"
    _hold_loop(eng, 1.0)
    t0 = time.monotonic()
    retry = eng.retry_ticket("T-001")
    assert time.monotonic() - t0 < 0.3, "retry_ticket waited for the loop"
    applied = retry.result(10)                # applied, on disk, and the track running
    assert applied.ticket("T-001").status in ("todo", "in_progress") and applied.status == "in_progress"
    assert applied.ticket("T-001").retry_count == 1
    final = eng.track_run(tid).result(20)
    assert final.ticket("T-001").retry_count == 1
    assert final.ticket("T-002").status == "completed"


def test_a_refused_command_raises_at_once_with_the_reason(make_engine):
    from multi_agent_conductor import EngineError
    eng = make_engine()
    tid = _track(eng, [("T-001", [], ["a.txt"])])
    eng.start_track(tid).result(10)
    with pytest.raises(EngineError, match="T-001"):
        eng.skip_ticket("T-001")           # completed: nothing to skip
    with pytest.raises(EngineError, match="no ticket 'T-404'"):
        eng.cancel_ticket("T-404")
    with pytest.raises(EngineError, match="git commits are off"):
        eng.revert_ticket("T-001")


def test_the_read_api_gives_streams_comms_previews_and_files(make_engine, workspace):
    (workspace / "src").mkdir()
    (workspace / "src" / "app.py").write_text("print('hi')\n")
    (workspace / ".git").mkdir()
    (workspace / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    eng = make_engine()
    tid = _track(eng, [("T-001", [], ["a.txt"])])
    eng.start_track(tid).result(10)
    sid = "Tier 3 (Worker): T-001"
    wait_for(lambda: eng.stream_info().get(sid, {}).get("state") == "done", what="stream end")
    text = eng.stream_text(sid)
    assert text and eng.stream_text(sid, 5) == text[5:]
    with pytest.raises(KeyError):
        eng.stream_text("Tier 3 (Worker): T-999")
    n = eng.comms_count()
    assert n > 2
    entries = eng.comms_entries()
    assert len(entries) == n and entries[1:3] == eng.comms_entries(1, 3)
    assert eng.comms_path() == eng.session_dir / "comms.jsonl"
    assert eng.usage_total().total_tokens > 0
    preview = eng.diff_preview("write_file", {"path": "src/app.py", "content": "print('bye')\n"})
    assert "-print('hi')" in preview and "+print('bye')" in preview
    files = eng.workspace_files()
    assert "src/app.py" in files and "README.md" in files
    assert not any(f.startswith((".git/", ".clutch/")) for f in files)
    assert len(eng.workspace_files(limit=1)) == 1
    assert eng.workspace == workspace.resolve()
    assert eng.track_dir(tid) == workspace.resolve() / "conductor" / "tracks" / tid
    assert eng.sandbox_status().mode in ("bwrap", "none")
    assert eng.current_proposal() is None
    plan = eng.plan_epic("Add a health endpoint").result(20)
    assert eng.current_proposal() == ("Add a health endpoint", plan)


def test_each_engine_part_is_its_own_module_with_its_thread_and_state_named():
    pkg = ROOT / "engine"
    for f in sorted(pkg.glob("*.py")):
        tree = ast.parse(f.read_text())
        doc = ast.get_docstring(tree) or ""
        assert "Threads" in doc and "State owned" in doc, f"{f.name}: docstring names no thread/state"
        assert len(f.read_text().splitlines()) < 800, f.name
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno < 400, f"{f.name}: class {node.name}"
    door = (ROOT / "multi_agent_conductor.py").read_text()
    assert len(door.splitlines()) < 400
