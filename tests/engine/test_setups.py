"""Background git work gives way to the critical path's set-up steps (engine/setups.py): a
landed ticket's tree is put back in the pool, trees are prepared ahead and the tracks' state is
written once the dependent's tree is open and its context built, never later than
BACKGROUND_WAIT_S after they asked, and no step is left "in flight" after a run."""
from __future__ import annotations

import threading
import time

import pytest

import engine.setups as setups_mod
from ai_client import FunctionProvider, ModelResponse
from conftest import Approver
from engine.setups import SetUps
from models import Approved, CheckpointPayload, Ticket
from test_checkpoint import project, writer
from test_worktree_runs import call, git, repo, scripted, track_with, worktrees


def test_nothing_in_flight_means_no_wait():
    s = SetUps()
    assert s.wait(timeout=5) < 0.05


def test_a_background_job_waits_until_the_step_ends():
    s = SetUps()
    s.begin("land:T-1")
    threading.Timer(0.15, s.end, ["land:T-1"]).start()
    waited = s.wait(timeout=5)
    assert 0.1 <= waited < 2 and s.busy() == frozenset()
    s.end("land:T-1")                    # ending twice is no error
    s.end("never-begun")


def test_the_job_a_ticket_waits_for_does_not_wait_for_that_ticket():
    s = SetUps()
    s.begin("T-2")                       # T-2 is in set-up, waiting for its prepared tree
    assert s.wait(for_ticket="T-2", timeout=5) < 0.05
    s.begin("land:T-1")                  # ... even while another step is in flight
    assert s.wait(for_ticket="T-2", timeout=5) < 0.05


def test_the_wait_is_bounded_and_ends_when_the_app_closes():
    s = SetUps()
    s.begin("T-1")                       # a set-up that never ends
    assert 0.15 <= s.wait(timeout=0.2) < 1.5
    threading.Timer(0.1, s.close).start()
    assert s.wait(timeout=5) < 2         # the app closing releases it
    assert s.wait(timeout=5) < 0.05      # and nothing waits afterwards


def _chain(make_engine, workspace, **kw):
    repo(workspace)
    steps = {f"T-00{i}": [call("write_file", path=f"t{i}.txt", content=f"{i}\n"),
                          ModelResponse(text="done")] for i in (1, 2)}
    eng = make_engine(provider=scripted(steps), git_commits=True, max_workers=2, **kw)
    tid = track_with(eng, [
        Ticket(id="T-001", description="one", target_files=["t1.txt"]),
        Ticket(id="T-002", description="two", target_files=["t2.txt"], depends_on=["T-001"])])
    return eng, tid


def _record(eng, events: list, slow_context: float = 0.0):
    """Note when T-002's set-up ends, when a tree goes back to the pool and when the state
    saying T-001 completed starts being written."""
    go, remove, write, sections = (eng._followers_go, eng._remove_tree, eng._write_snapshots,
                                   eng._worker_sections)
    land = eng._land

    def followers_go(ticket_id):
        events.append(("set up", ticket_id, time.monotonic()))
        go(ticket_id)

    def remove_tree(track, ticket, keep_branch):
        events.append(("pooled", ticket.id, time.monotonic()))
        remove(track, ticket, keep_branch)

    def write_snapshots(snaps):
        done = {k.id for s in snaps for k in s.tickets if k.status == "completed"}
        events.append(("written", ",".join(sorted(done)), time.monotonic()))
        write(snaps)

    def worker_sections(track, ticket, root=None):
        if ticket.id == "T-002" and slow_context:
            time.sleep(slow_context)      # a big repository's map
        return sections(track, ticket, root=root)

    def land_(track, ticket, path, cancel, message):
        sha = land(track, ticket, path, cancel, message)
        events.append(("landed", ticket.id, time.monotonic()))
        return sha
    eng._followers_go, eng._remove_tree, eng._write_snapshots = (followers_go, remove_tree,
                                                                 write_snapshots)
    eng._worker_sections, eng._land = worker_sections, land_


def _first(events, kind, what):
    return min(t for k, w, t in events if k == kind and what(w))


def test_a_landed_tree_is_pooled_and_the_state_written_after_the_dependents_set_up(
        make_engine, workspace, monkeypatch):
    monkeypatch.setattr(setups_mod, "BACKGROUND_WAIT_S", 10.0)   # only the order is tested
    eng, tid = _chain(make_engine, workspace)
    events: list = []
    _record(eng, events)
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"]
    t2_set_up = _first(events, "set up", lambda w: w == "T-002")
    assert _first(events, "landed", lambda w: w == "T-001") < t2_set_up
    assert _first(events, "pooled", lambda w: w == "T-001") >= t2_set_up
    assert _first(events, "written", lambda w: "T-001" in w.split(",")) >= t2_set_up
    assert eng._setups.busy() == frozenset()        # nothing left in flight
    eng.settle()
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def test_a_long_set_up_does_not_hold_the_background_work_for_long(make_engine, workspace):
    eng, tid = _chain(make_engine, workspace)
    events: list = []
    _record(eng, events, slow_context=1.5)
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"]
    landed = _first(events, "landed", lambda w: w == "T-001")
    pooled = _first(events, "pooled", lambda w: w == "T-001")
    assert pooled < _first(events, "set up", lambda w: w == "T-002")   # did not wait it out
    assert pooled - landed < setups_mod.BACKGROUND_WAIT_S + 1.0
    assert eng._setups.busy() == frozenset()


@pytest.mark.parametrize("ending", ["failed", "cancelled"])
def test_no_step_is_left_in_flight_when_a_ticket_fails_or_is_cancelled(make_engine, workspace,
                                                                       ending):
    repo(workspace)
    holder: dict = {}

    def first(req):
        if ending == "failed":
            raise RuntimeError("the model broke")
        holder["eng"].cancel_ticket("T-001")
        return call("write_file", path="t1.txt", content="1\n")
    eng = holder["eng"] = make_engine(provider=scripted({"T-001": [first, ModelResponse(
        text="done")], "T-002": [ModelResponse(text="x")]}), git_commits=True, max_workers=2)
    tid = holder["tid"] = track_with(eng, [
        Ticket(id="T-001", description="one", target_files=["t1.txt"]),
        Ticket(id="T-002", description="two", target_files=["t2.txt"], depends_on=["T-001"])])
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == [ending, "blocked"]
    assert eng._setups.busy() == frozenset()
    eng.settle()
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def _busy_while_asked(eng, tid: str, kind: type):
    """Run the track, approving every question; the steps in flight whenever a question with
    a payload of ``kind`` waited for the person."""
    busy: list = []

    def decide(r):
        if isinstance(r.payload, kind):
            busy.append(eng._setups.busy())
        return Approved()
    return Approver.run_track(eng, tid, decide), busy


def test_a_checkpoint_waiting_for_the_person_holds_no_background_work(make_engine, workspace):
    """A phase's manual verification has no set-up: while the person decides, the trees are
    tidied and the state written as usual."""
    tid = project(workspace)
    eng = make_engine(provider=FunctionProvider(writer), auto_approve=False, git_commits=True)
    track, busy_at_question = _busy_while_asked(eng, tid, CheckpointPayload)
    check = next(k for k in track.tickets if k.checkpoint)
    assert check.status == "completed" and eng.worktrees_on
    assert busy_at_question and check.id not in busy_at_question[0], busy_at_question


def test_the_state_write_asked_for_as_the_checks_pass_waits_for_the_landing(
        make_engine, workspace, monkeypatch):
    """A ticket's checks pass, the loop is asked to save them, and its landing begins: that
    write (Python, holding the GIL for tens of milliseconds) used to start first, before the
    landing counted as in flight."""
    monkeypatch.setattr(setups_mod, "BACKGROUND_WAIT_S", 10.0)
    eng, tid = _chain(make_engine, workspace)
    events: list = []
    _record(eng, events)
    check, land = eng._check_ticket, eng._land

    def check_ticket(track, ticket, *a, **kw):
        report = check(track, ticket, *a, **kw)
        events.append(("checked", ticket.id, time.monotonic()))
        return report

    def slow_land(track, ticket, *a, **kw):
        time.sleep(0.3)               # the landing's staging, on a big tree
        return land(track, ticket, *a, **kw)
    eng._check_ticket, eng._land = check_ticket, slow_land
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"]
    checked = _first(events, "checked", lambda w: w == "T-001")
    t2_set_up = _first(events, "set up", lambda w: w == "T-002")
    between = [(w, t - checked) for k, w, t in events if k == "written" and checked < t < t2_set_up]
    assert between == [], between
    assert eng._setups.busy() == frozenset()


def test_the_first_state_write_of_a_run_waits_for_the_first_set_up(make_engine, workspace,
                                                                    monkeypatch):
    monkeypatch.setattr(setups_mod, "BACKGROUND_WAIT_S", 10.0)
    eng, tid = _chain(make_engine, workspace)
    events: list = []
    _record(eng, events)
    start = eng._tb.start_track

    def slow_start(track_id):
        time.sleep(0.3)               # the track's branch, made while the write would run
        return start(track_id)
    eng._tb.start_track = slow_start
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"]
    assert _first(events, "written", lambda w: True) >= \
        _first(events, "set up", lambda w: w == "T-001")
    assert eng._setups.busy() == frozenset()


def test_the_state_writer_does_not_wait_for_a_merge_and_the_other_jobs_do():
    s = SetUps()
    s.begin(setups_mod.MERGE + "t1")
    assert s.wait(writer=True, timeout=5) < 0.05
    assert 0.15 <= s.wait(timeout=0.2) < 1.5
    s.begin("land:T-1")                  # a landing holds the writer as before
    assert 0.15 <= s.wait(writer=True, timeout=0.2) < 1.5
    threading.Timer(0.1, s.end, ["land:T-1"]).start()
    assert s.wait(writer=True, timeout=5) < 2      # its end wakes the writer, the merge left
    assert s.busy() == frozenset({setups_mod.MERGE + "t1"})


def test_the_last_landed_tree_is_released_after_the_tracks_merge_and_the_write_overlaps_it(
        make_engine, workspace, monkeypatch):
    """The track's last ticket landed: its merge into the person's branch is the critical step
    now. The last tree is not pooled (no ticket is left to take it): only its branch goes,
    after the merge, and the track's tidying removes the tree with the others; the write
    saying the track's tickets completed does not wait for the merge."""
    monkeypatch.setattr(setups_mod, "BACKGROUND_WAIT_S", 10.0)   # only the order is tested
    eng, tid = _chain(make_engine, workspace)
    events: list = []
    _record(eng, events)
    merge, release = eng._tb.merge_track, eng._tb.release_ticket

    def slow_merge(track_id, into=None):
        events.append(("merging", track_id, time.monotonic()))
        time.sleep(0.3)               # git merging into the person's big working tree
        res = merge(track_id, into)
        events.append(("merged", track_id, time.monotonic()))
        return res

    def release_(track_id, ticket_id):
        events.append(("released", ticket_id, time.monotonic()))
        release(track_id, ticket_id)
    eng._tb.merge_track, eng._tb.release_ticket = slow_merge, release_
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"]
    assert track.merged_into == "main"
    merging, merged = _first(events, "merging", bool), _first(events, "merged", bool)
    assert merging < _first(events, "written", lambda w: w == "T-001,T-002") < merged
    assert eng._setups.busy() == frozenset()
    eng.settle()      # the tidy thread's jobs, in order: the last tree's, then the track's
    assert _first(events, "released", lambda w: w == "T-002") >= merged
    assert [w for k, w, _ in events if k in ("pooled", "released")] == ["T-001", "T-002"]
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    assert git(workspace, "branch", "--list", "clutch-ticket/*") == ""


def test_a_merge_question_waiting_for_the_person_holds_no_background_work(make_engine,
                                                                           workspace):
    from models import MergePayload
    eng, tid = _chain(make_engine, workspace, auto_approve=False)
    track, busy_at_question = _busy_while_asked(eng, tid, MergePayload)
    assert track.merged_into == "main"
    assert busy_at_question == [frozenset()], busy_at_question
    assert eng._setups.busy() == frozenset()
