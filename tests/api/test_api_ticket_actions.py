"""Ticket actions over the API: revert (a completed ticket's commit undone with git), and
retry after it; the engine's commands return futures, which the routes wait for."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import hook_server
from conftest import fast_settings
from hook_server import ApiClient, ApiError
from models import Ticket, TrackProposal


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], capture_output=True, text=True,
                          check=True).stdout


def init_repo(ws: Path) -> None:
    git(ws, "init", "-q")
    git(ws, "config", "user.email", "t@example.com")
    git(ws, "config", "user.name", "T")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "init")


@pytest.fixture
def completed_run(workspace):
    """A git workspace with one track run to completion over two tickets, served by the API."""
    init_repo(workspace)
    from multi_agent_conductor import ConductorEngine   # its commands return futures
    eng = ConductorEngine(workspace, fast_settings(git_commits=True), auto_approve=True).start()
    srv = None
    try:
        [tr] = eng.accept_tracks([TrackProposal(title="Core: greeting", goal="g",
                                                acceptance_criteria=["c"])]).result(10)
        eng.set_tickets(tr.id, [Ticket(id="T-001", description="first", target_files=["a.py"]),
                                Ticket(id="T-002", description="second",
                                       target_files=["b.py"])]).result(10)
        track = eng.start_track(tr.id).result(60)
        assert [t.status for t in track.tickets] == ["completed", "completed"]
        srv = hook_server.start_for_engine(eng)
        yield eng, tr.id, ApiClient(srv.url, srv.token)
    finally:
        if srv is not None:
            srv.stop()
        eng.close()


def test_revert_over_the_api_undoes_the_commit_and_reopens_the_ticket(completed_run, workspace):
    eng, tid, client = completed_run
    sha = eng.track(tid).ticket("T-002").commit_sha
    assert (workspace / "b.py").exists()
    out = client.revert_ticket("T-002")
    assert out["status"] == "reverted" and out["ticket_id"] == "T-002" and out["revert_sha"]
    assert not (workspace / "b.py").exists() and (workspace / "a.py").exists()
    assert f"This reverts commit {sha}"[:30] in git(workspace, "log", "-1", "--format=%B")
    track = client.state()["tracks"][0]
    t = {k["id"]: k for k in track["tickets"]}
    assert t["T-002"]["status"] == "todo" and not t["T-002"]["commit_sha"]
    assert track["status"] == "paused"          # work again: Resume runs the ticket
    assert t["T-001"]["status"] == "completed"
    # twice: the ticket has no commit any more, so the engine refuses with its reason
    with pytest.raises(ApiError) as e:
        client.revert_ticket("T-002")
    assert e.value.status == 409 and "T-002" in e.value.message
    with pytest.raises(ApiError) as e:
        client.revert_ticket("T-404")
    assert e.value.status == 404


def test_refusals_reach_the_client_whether_raised_at_once_or_through_a_future(completed_run):
    eng, tid, client = completed_run
    for action in (client.retry_ticket, client.skip_ticket, client.cancel_ticket):
        with pytest.raises(ApiError) as e:
            action("T-001")                  # completed: none of these apply
        assert e.value.status == 409 and "T-001" in e.value.message, e.value
    assert eng.track(tid).ticket("T-001").status == "completed"


def test_retry_after_revert_runs_the_ticket_again(completed_run, workspace):
    eng, tid, client = completed_run
    client.revert_ticket("T-001")
    assert eng.track(tid).ticket("T-001").status == "todo"
    client.skip_ticket("T-001", reason="later")
    assert eng.track(tid).ticket("T-001").status == "skipped"
    assert client.retry_ticket("T-001") == {"status": "retrying", "ticket_id": "T-001"}
    t = client.wait_for_track_status(tid, "completed", timeout=60)
    k = {k["id"]: k for k in t["tickets"]}
    assert k["T-001"]["status"] == "completed" and k["T-001"]["retry_count"] == 1
    assert (workspace / "a.py").exists()


def test_a_tickets_diff_over_the_api(completed_run, workspace):
    eng, tid, client = completed_run
    d = client.ticket_diff("T-002")
    assert d["ticket_id"] == "T-002" and d["track_id"] == tid
    assert d["files"] == ["b.py"] and "+++ b/b.py" in d["diff"]
    assert d["commit"] == eng.track(tid).ticket("T-002").commit_sha
    with pytest.raises(ApiError) as e:
        client.ticket_diff("T-404")
    assert e.value.status == 404
    client.revert_ticket("T-002")             # no commit any more: nothing to show, no error
    assert client.ticket_diff("T-002")["files"] == []


def test_a_revert_that_conflicts_is_a_409_with_gits_reason_and_changes_nothing(completed_run,
                                                                               workspace):
    eng, tid, client = completed_run
    sha = eng.track(tid).ticket("T-001").commit_sha
    (workspace / "a.py").write_text("# the person's own version\n")
    git(workspace, "commit", "-qam", "mine")
    head = git(workspace, "rev-parse", "HEAD")
    with pytest.raises(ApiError) as e:
        client.revert_ticket("T-001")
    assert e.value.status == 409, e.value         # a refusal, not an internal error
    assert "cannot revert T-001" in e.value.message and "a.py" in e.value.message
    assert git(workspace, "rev-parse", "HEAD") == head
    assert git(workspace, "status", "--porcelain", "--untracked-files=no") == ""
    assert (workspace / "a.py").read_text() == "# the person's own version\n"
    k = eng.track(tid).ticket("T-001")
    assert k.status == "completed" and k.commit_sha == sha


def test_a_tracks_verify_command_over_the_api(completed_run, workspace):
    eng, tid, client = completed_run
    out = client.set_verify_command(tid, "python3 -m compileall -q .")
    assert out["verify_command"] == "python3 -m compileall -q ." == eng.track(tid).verify_command
    assert client.set_verify_command(tid, None)["verify_command"] is None
    for bad, status in ((5, 400), ("x\0y", 409)):
        with pytest.raises(ApiError) as e:
            client.set_verify_command(tid, bad)
        assert e.value.status == status, e.value
    with pytest.raises(ApiError) as e:
        client.set_verify_command("no-such-track", "true")
    assert e.value.status == 404


def test_git_init_over_the_api_turns_worktrees_on(workspace):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings(git_commits=True), auto_approve=True).start()
    srv = hook_server.start_for_engine(eng)
    try:
        client = ApiClient(srv.url, srv.token)
        out = client.init_git()
        assert out["status"] == "initialized" and out["commit"] and out["worktrees"] is True
        assert "README.md" in git(workspace, "ls-files")
        with pytest.raises(ApiError) as e:       # once is enough: now refused with the reason
            client.init_git()
        assert e.value.status == 409
    finally:
        srv.stop()
        eng.close()
