"""A worktree per ticket on real git repositories (issue 17): parallel tickets cannot see each
other's unfinished files, dependents start from their dependencies' merged work, the same file
changed two ways ends merged or as a named conflict (never a lost side), the person's
uncommitted edit survives byte for byte, and no worktree outlives a run or a cancel."""
from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from ai_client import FunctionProvider, ModelResponse, ToolCall
from conftest import Approver, git, wait_for
from models import Approved, Denied, MergePayload, SpawnPayload, Ticket, TrackProposal

def repo(ws: Path) -> None:
    """A small repository with history on main and another branch."""
    git(ws, "init", "-q", "-b", "main")
    (ws / "util.py").write_text("def add(a, b):\n    return a + b\n")
    (ws / "shared.txt").write_text("line 1\nline 2\nline 3\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "init")
    git(ws, "branch", "other")
    (ws / "app.py").write_text("from util import add\nprint(add(1, 2))\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "app")


def call(name: str, **args) -> ModelResponse:
    return ModelResponse(text=f"calling {name}", tool_calls=[ToolCall(id=f"c-{name}", name=name,
                                                                      args=args)])


def last_result(req) -> dict:
    for m in reversed(req.messages):
        if m.role == "tool" and m.tool_returns:
            return m.tool_returns[-1].result
    return {}


def scripted(steps: dict, qa: str = "Tier 4: see the check's output") -> FunctionProvider:
    """A model whose worker for ticket T answers steps[T][round] (a response or a function of
    the request); Tier 4 answers `qa`."""
    def fn(req):
        if req.tier == "Tier 4":
            return ModelResponse(text=qa)
        rounds = sum(1 for m in req.messages if m.role == "model")
        script = steps[req.ticket_id]
        step = script[min(rounds, len(script) - 1)]
        return step(req) if callable(step) else step
    return FunctionProvider(fn)


def track_with(eng, tickets: list[Ticket]) -> str:
    [track] = eng.accept_tracks([TrackProposal(title="Core: worktrees", goal="g",
                                               acceptance_criteria=["c"])]).result(10)
    eng.set_tickets(track.id, tickets).result(10)
    return track.id


def wait_merged(holder: dict, ticket_id: str) -> None:
    """Wait (in a worker's model call) until ticket_id is completed, i.e. merged."""
    wait_for(lambda: "eng" in holder and any(
        k.id == ticket_id and k.status == "completed"
        for t in holder["eng"].tracks() for k in t.tickets), timeout=20, what=ticket_id)


def after_started(holder: dict, ticket_id: str, step):
    """A worker step that first waits until ticket_id's worker has made its first model call,
    i.e. its worktree exists at the track as it was: two parallel tickets then truly start
    from the same commit, however quickly the other one lands."""
    def run(req):
        wait_for(lambda: holder.get(f"started:{ticket_id}"), timeout=20, what=ticket_id)
        return step(req) if callable(step) else step
    return run


def mark_started(holder: dict, ticket_id: str, step):
    """A worker step that notes ticket_id's worker is running, then does `step`."""
    def run(req):
        holder[f"started:{ticket_id}"] = True
        return step(req)
    return run


def rival_track(make_engine, holder: dict, t1_step, t2_steps: list, **settings) -> str:
    """Two parallel tickets that both change shared.txt, started from one commit: T-001 acts
    only once T-002's worker runs (its first step marks it running). The track's id; the
    engine is holder["eng"]."""
    eng = holder["eng"] = make_engine(provider=scripted({
        "T-001": [after_started(holder, "T-002", t1_step), ModelResponse(text="done")],
        "T-002": [mark_started(holder, "T-002", t2_steps[0]), *t2_steps[1:]],
    }), git_commits=True, max_workers=2, **settings)
    return track_with(eng, [Ticket(id="T-001", description="one", target_files=["shared.txt"]),
                            Ticket(id="T-002", description="two", target_files=["shared.txt"])])


def worktrees(ws: Path) -> list[str]:
    return [line for line in git(ws, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def test_parallel_tickets_work_apart_and_dependents_start_from_the_merged_work(make_engine,
                                                                             workspace):
    repo(workspace)
    (workspace / "app.py").write_text("# the person's unsaved thought\nfrom util import add\n")
    (workspace / "notes.txt").write_bytes(b"untracked \xff bytes\n")
    app_before = (workspace / "app.py").read_bytes()
    t2_checked = threading.Event()
    seen = {}

    def t1_wait(req):
        assert t2_checked.wait(20), "T-002 never ran its check"
        return ModelResponse(text="wrote a.txt")

    def t2_note(req):
        seen["T-002"] = last_result(req).get("output", "")
        t2_checked.set()
        return call("write_file", path="b.txt", content="B\n")

    def t3_note(req):
        seen["T-003"] = last_result(req).get("output", "")
        return ModelResponse(text="combined")
    eng = make_engine(provider=scripted({
        "T-001": [call("write_file", path="a.txt", content="A\n"), t1_wait],
        "T-002": [call("run_shell", command="test -e a.txt && echo SEEN || echo APART"), t2_note,
                  ModelResponse(text="wrote b.txt")],
        "T-003": [call("run_shell", command="cat a.txt b.txt > c.txt && cat c.txt"), t3_note],
    }), git_commits=True, max_workers=2)
    tid = track_with(eng, [
        Ticket(id="T-001", description="write a", target_files=["a.txt"]),
        Ticket(id="T-002", description="write b", target_files=["b.txt"]),
        Ticket(id="T-003", description="combine", depends_on=["T-001", "T-002"],
               target_files=["c.txt"])])
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed"] * 3, \
        [(k.id, k.blocked_reason) for k in track.tickets]
    assert seen["T-002"].strip() == "APART"        # T-001's unfinished a.txt was not visible
    assert seen["T-003"].split() == ["A", "B"]     # T-003 started from both merged changes
    assert track.branch == f"clutch/{tid}" and track.merged_into == "main"
    # each ticket's commit is on the track branch, and so on main after the merge
    for k in track.tickets:
        git(workspace, "merge-base", "--is-ancestor", k.commit_sha, f"clutch/{tid}")
        git(workspace, "merge-base", "--is-ancestor", k.commit_sha, "main")
    assert git(workspace, "show", "main:c.txt") == "A\nB\n"
    # the person's uncommitted edit and untracked file: byte for byte
    assert (workspace / "app.py").read_bytes() == app_before
    assert (workspace / "notes.txt").read_bytes() == b"untracked \xff bytes\n"
    assert (workspace / "c.txt").read_text() == "A\nB\n"   # the merge reached their tree
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    assert not any(b.startswith("clutch-ticket/") for b in
                   git(workspace, "branch", "--format=%(refname:short)").split())
    summary = eng.summary()["tracks"][0]
    assert summary["branch"] == f"clutch/{tid}" and summary["merged_into"] == "main"
    assert [(k["status"], k["attempts"], k["commit"]) for k in summary["tickets"]] == \
        [("completed", 1, k.commit_sha) for k in track.tickets]


def test_the_same_file_changed_two_ways_is_merged_by_a_repair_worker(make_engine, workspace):
    repo(workspace)

    def resolve(req):
        text = req.messages[0].text
        assert "conflicts in: shared.txt" in text
        return call("write_file", path="shared.txt",
                    content="line 1\nline 2 (from T-001)\nline 2 (from T-002)\nline 3\n")
    holder: dict = {}

    def t2_after(req):
        wait_merged(holder, "T-001")       # T-002 changes the same line once T-001 is merged
        return call("edit_file", path="shared.txt", old="line 2", new="line 2 (from T-002)")
    tid = rival_track(
        make_engine, holder,
        call("edit_file", path="shared.txt", old="line 2", new="line 2 (from T-001)"),
        [t2_after, lambda r: ModelResponse(text="done") if "conflict" not in
         r.messages[0].text else resolve(r), ModelResponse(text="resolved")])
    eng = holder["eng"]
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"], \
        [(k.id, k.blocked_reason) for k in track.tickets]
    merged = git(workspace, "show", "main:shared.txt")
    assert "line 2 (from T-001)" in merged and "line 2 (from T-002)" in merged   # both sides
    assert "<<<<<<<" not in merged
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def test_an_unresolved_conflict_fails_the_ticket_naming_it_and_keeps_the_other_side(
        make_engine, workspace):
    repo(workspace)
    holder: dict = {}

    def t2_first(req):
        if "conflict" in req.messages[0].text:       # the repair worker: leaves the markers
            return ModelResponse(text="I could not decide")
        wait_merged(holder, "T-001")
        return call("write_file", path="shared.txt", content="T-002's version\n")
    tid = rival_track(make_engine, holder,
                      call("write_file", path="shared.txt", content="T-001's version\n"),
                      [t2_first, ModelResponse(text="done")])
    eng = holder["eng"]
    track = eng.start_track(tid).result(60)
    t1, t2 = track.tickets
    assert t1.status == "completed" and t2.status == "failed"
    assert "conflict" in t2.blocked_reason and "shared.txt" in t2.blocked_reason
    assert track.status == "failed" and not track.merged_into
    # the track branch keeps T-001's side whole; T-002's change is on its own branch only
    assert git(workspace, "show", f"clutch/{tid}:shared.txt") == "T-001's version\n"
    assert git(workspace, "show", f"clutch-ticket/{tid}/T-002:shared.txt") == "T-002's version\n"
    assert git(workspace, "show", "main:shared.txt") == "line 1\nline 2\nline 3\n"
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def test_the_merge_waits_for_consent_and_refuses_to_overwrite_the_persons_edit(make_engine,
                                                                             workspace):
    repo(workspace)
    asked = []

    def decide(req):
        if isinstance(req.payload, MergePayload):
            asked.append(req.payload)
        return Approved()
    eng = make_engine(provider=scripted({"T-001": [
        call("write_file", path="util.py", content="def add(a, b):\n    return b + a\n"),
        ModelResponse(text="done")]}), git_commits=True, auto_approve=False)
    tid = track_with(eng, [Ticket(id="T-001", description="swap", target_files=["util.py"])])
    (workspace / "util.py").write_text("# mine, not saved\n")      # the person edits meanwhile
    track = Approver.run_track(eng, tid, decide)
    assert [p.branch for p in asked] == [f"clutch/{tid}"] and asked[0].into == "main"
    assert "return b + a" in asked[0].diff and asked[0].tickets[0]["id"] == "T-001"
    assert track.status == "completed" and not track.merged_into     # refused, branch kept
    assert (workspace / "util.py").read_text() == "# mine, not saved\n"
    assert "return b + a" in git(workspace, "show", f"clutch/{tid}:util.py")
    assert "return a + b" in git(workspace, "show", "main:util.py")
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def test_a_refused_merge_and_no_merge_leave_the_track_branch_for_a_pull_request(make_engine,
                                                                               workspace):
    repo(workspace)
    step = [call("write_file", path="new.txt", content="n\n"), ModelResponse(text="done")]
    prov = scripted({"T-001": step, "T-101": step})
    eng = make_engine(provider=prov, git_commits=True, merge_tracks=False)
    tid = track_with(eng, [Ticket(id="T-001", description="new", target_files=["new.txt"])])
    track = eng.start_track(tid).result(60)
    assert track.status == "completed" and not track.merged_into
    assert git(workspace, "show", f"clutch/{tid}:new.txt") == "n\n"
    assert not (workspace / "new.txt").exists()
    eng.close()
    eng2 = make_engine(provider=prov, git_commits=True, auto_approve=False)
    tid2 = track_with(eng2, [Ticket(id="T-101", description="new", target_files=["new.txt"])])
    track2 = Approver.run_track(eng2, tid2, lambda r: Denied(reason="I will open a PR")
                                if isinstance(r.payload, MergePayload) else Approved())
    assert track2.status == "completed" and not track2.merged_into
    assert not (workspace / "new.txt").exists()


def test_a_cancelled_ticket_leaves_no_worktree_and_its_work_on_its_own_branch(make_engine,
                                                                              workspace):
    repo(workspace)
    started = threading.Event()
    release = threading.Event()

    def stall(req):
        started.set()
        release.wait(20)
        return ModelResponse(text="too late")
    eng = make_engine(provider=scripted({"T-001": [
        call("write_file", path="half.txt", content="half\n"), stall]}), git_commits=True)
    tid = track_with(eng, [Ticket(id="T-001", description="slow", target_files=["half.txt"])])
    fut = eng.start_track(tid)
    assert started.wait(20)
    eng.cancel_ticket("T-001")
    release.set()
    track = fut.result(60)
    assert track.tickets[0].status == "cancelled"
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    assert git(workspace, "show", f"clutch-ticket/{tid}/T-001:half.txt") == "half\n"
    assert not (workspace / "half.txt").exists()


def test_the_spawn_approval_shows_the_ticket_while_its_worktree_is_made(make_engine, workspace):
    repo(workspace)
    eng = make_engine(provider=scripted({"T-001": [call("write_file", path="x.txt", content="x"),
                                                   ModelResponse(text="done")]}),
                      git_commits=True, auto_approve=False)
    tid = track_with(eng, [Ticket(id="T-001", description="x", target_files=["x.txt"])])
    fut = eng.start_track(tid)
    req = wait_for(lambda: next((r for r in eng.approvals.pending()
                                 if isinstance(r.payload, SpawnPayload)), None), timeout=20,
                   what="the spawn approval")
    # while the person reads, the worktree is made
    wt = workspace / ".clutch" / "worktrees" / tid / "T-001"
    wait_for(lambda: (wt / ".git").is_file(), timeout=20, what="the worktree")
    eng.resolve(req.id, Denied(reason="not now"))
    track = fut.result(60)
    assert track.tickets[0].status == "skipped"
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    assert f"clutch-ticket/{tid}/T-001" not in git(workspace, "branch", "--format=%(refname:short)")


def test_a_worker_that_changes_nothing_leaves_no_branch_and_no_tree(make_engine, workspace):
    repo(workspace)
    eng = make_engine(provider=scripted({"T-001": [ModelResponse(text="nothing to do")]}),
                      git_commits=True)
    tid = track_with(eng, [Ticket(id="T-001", description="noop")])
    t = eng.start_track(tid).result(60).tickets[0]
    assert t.status == "failed" and "changed no file" in t.blocked_reason
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    assert "clutch-ticket/" not in git(workspace, "branch", "--format=%(refname:short)")


def test_a_ticket_that_landed_just_before_a_kill_is_counted_not_done_again(make_engine,
                                                                          workspace):
    """A run killed after T-001's commit landed on the track branch and before T-001 was
    saved completed: the resumed run completes T-001 with that commit, spawns no worker for it
    (one would redo the change on top of itself: "the worker changed no file", or the change
    twice), and T-002 starts from it. Found by killing `clutch run` at random moments."""
    repo(workspace)
    spawned: list[str] = []

    def first(step):
        def run(req):
            spawned.append(req.ticket_id)
            return step
        return run
    eng = make_engine(provider=scripted({
        "T-001": [first(call("write_file", path="a.txt", content="A\n")),
                  ModelResponse(text="wrote a")],
        "T-002": [first(call("write_file", path="b.txt", content="B\n")),
                  ModelResponse(text="wrote b")]}), git_commits=True)
    tid = track_with(eng, [Ticket(id="T-001", description="write a", target_files=["a.txt"]),
                           Ticket(id="T-002", description="write b", target_files=["b.txt"],
                                  depends_on=["T-001"])])
    # what the killed run left: T-001's worktree, its commit landed, its state not saved
    tb = eng._tb
    tb.start_track(tid)
    wt = tb.ticket_worktree(tid, "T-001")
    (wt / "a.txt").write_text("A\n")
    landed = tb.land_ticket(tid, "T-001", wt, "T-001: write a")
    assert landed is not None and landed.ok
    assert [k.status for k in eng.track(tid).tickets] == ["todo", "todo"]
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed"] * 2, \
        [(k.id, k.blocked_reason) for k in track.tickets]
    assert spawned == ["T-002"]
    t1 = track.tickets[0]
    assert t1.commit_sha == landed.sha and t1.attempts == 0
    assert "landed before the last run stopped" in t1.merge
    assert git(workspace, "log", "--format=%s", "main", "--", "a.txt").splitlines() == [
        "T-001: write a"]                                     # the change once, not twice
    assert git(workspace, "show", "main:b.txt") == "B\n"
    plan = (workspace / "conductor/tracks" / tid / "plan.md").read_text()
    assert f"- [x] Task: write a {landed.sha[:7]}\n" in plan     # ticked with the landed commit
    eng.settle()
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def test_a_conflict_the_person_resolves_themselves_completes_at_retry(make_engine, workspace):
    """The repair worker refused: the reason says how to resolve it by hand; the person merges
    the ticket's branch into the track branch themselves, presses Retry, and the ticket
    completes with their merge, no worker again; then the track merges into main."""
    repo(workspace)
    holder: dict = {}
    spawned: list[str] = []

    def t2(req):
        if not any(m.role == "model" for m in req.messages):
            spawned.append(req.ticket_id)
        wait_merged(holder, "T-001")
        return call("write_file", path="shared.txt", content="T-002's version\n")
    tid = rival_track(make_engine, holder,
                      call("write_file", path="shared.txt", content="T-001's version\n"),
                      [t2, ModelResponse(text="done")], auto_approve=False)
    eng = holder["eng"]
    track = Approver.run_track(eng, tid, lambda r: Denied(reason="I will do it")
                               if isinstance(r.payload, SpawnPayload) and r.payload.attempt == 0
                               else Approved())
    t2_reason = track.tickets[1].blocked_reason
    assert track.tickets[1].status == "failed" and "Retry T-002" in t2_reason
    assert f"git merge clutch-ticket/{tid}/T-002" in t2_reason
    # the person resolves it by hand in a checkout of the track branch
    side = workspace.parent / "by-hand"
    git(workspace, "worktree", "add", "-q", str(side), f"clutch/{tid}")
    subprocess.run(["git", "-C", str(side), "merge", f"clutch-ticket/{tid}/T-002"],
                   capture_output=True)
    (side / "shared.txt").write_text("both versions, combined by hand\n")
    git(side, "commit", "-qam", "Merge T-002 by hand")
    git(workspace, "worktree", "remove", str(side))
    n_spawned = len(spawned)
    ap = Approver(eng, lambda r: Approved())        # the merge approval, at the track's end
    ap.start()
    try:
        eng.retry_ticket("T-002").result(30)      # runs the track again
        wait_for(lambda: not eng.is_running(tid) and eng.track(tid).status == "completed",
                 timeout=60, what="the track to complete")
    finally:
        ap.stop.set()
    track = eng.track(tid)
    t = track.tickets[1]
    assert t.status == "completed" and t.merge == "resolved by you" and len(spawned) == n_spawned
    assert track.status == "completed" and track.merged_into == "main"
    assert git(workspace, "show", "main:shared.txt") == "both versions, combined by hand\n"
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def test_a_planned_tracks_worktrees_are_checked_out_while_the_person_reads_it(make_engine,
                                                                            workspace):
    """Tier 2's plan done: up to max_workers trees are prepared in the track's pool (at HEAD,
    the track not started yet); its tickets then take them, and none is left at the end."""
    repo(workspace)
    eng = make_engine(git_commits=True, max_workers=2)
    eng.plan_epic("Add multiply(a, b) to util.py with a test").result(30)
    [track] = eng.accept_tracks([TrackProposal(title="Core: multiply", goal="multiply, tested",
                                               acceptance_criteria=["c"])]).result(10)
    planned = eng.plan_track(track.id).result(30)
    assert len(planned.tickets) >= 2
    pool = workspace / ".clutch" / "worktrees" / track.id / "_pool"
    wait_for(lambda: pool.is_dir() and len(list(pool.iterdir())) == 2, timeout=30,
             what="two prepared worktrees")
    assert len(worktrees(workspace)) == 3
    done = eng.start_track(track.id).result(60)
    assert all(k.status == "completed" for k in done.tickets), \
        [(k.id, k.blocked_reason) for k in done.tickets]
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    # a track planned and never started: its prepared trees go when the app closes
    [idle] = eng.accept_tracks([TrackProposal(title="Docs: multiply", goal="document it",
                                              acceptance_criteria=["c"])]).result(10)
    eng.plan_track(idle.id).result(30)
    idle_pool = workspace / ".clutch" / "worktrees" / idle.id / "_pool"
    wait_for(lambda: idle_pool.is_dir() and list(idle_pool.iterdir()), timeout=30,
             what="a prepared worktree")
    eng.close()
    eng.settle()      # the finished track's trees go after it reports
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def test_a_dependents_tree_is_prepared_while_the_ticket_it_waits_for_works(make_engine,
                                                                           workspace):
    """T-002 waits for T-001: its tree is checked out while T-001's worker runs (detached, no
    branch yet), and when T-001 lands it is brought forward, so T-002 sees T-001's file; at
    the end no tree and no ticket branch is left."""
    repo(workspace)
    holder: dict = {}

    def t1(req):
        tree = workspace / ".clutch" / "worktrees" / holder["tid"] / "T-002"
        wait_for(lambda: (tree / ".git").is_file() and (tree / "util.py").is_file(),
                 timeout=20, what="T-002's prepared tree")
        holder["prepared_head"] = git(tree, "rev-parse", "--abbrev-ref", "HEAD").strip()
        return call("write_file", path="a.txt", content="from T-001\n")

    def t2(req):
        tree = workspace / ".clutch" / "worktrees" / holder["tid"] / "T-002"
        holder["t2_sees"] = (tree / "a.txt").read_text()
        holder["t2_head"] = git(tree, "rev-parse", "--abbrev-ref", "HEAD").strip()
        return call("write_file", path="b.txt", content="from T-002\n")
    eng = make_engine(provider=scripted({
        "T-001": [t1, ModelResponse(text="done")],
        "T-002": [t2, ModelResponse(text="done")],
    }), git_commits=True, max_workers=2)
    tid = holder["tid"] = track_with(eng, [
        Ticket(id="T-001", description="one", target_files=["a.txt"]),
        Ticket(id="T-002", description="two", target_files=["b.txt"], depends_on=["T-001"])])
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["completed", "completed"], \
        [(k.id, k.blocked_reason) for k in track.tickets]
    assert holder["prepared_head"] == "HEAD"                  # detached while it waited
    assert holder["t2_sees"] == "from T-001\n"                # brought forward at its start
    assert holder["t2_head"] == f"clutch-ticket/{tid}/T-002"
    assert git(workspace, "show", "main:b.txt") == "from T-002\n"
    eng.settle()
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    assert "clutch-ticket" not in git(workspace, "branch", "--list")


def test_a_prepared_tree_whose_ticket_never_starts_leaves_nothing(make_engine, workspace):
    """T-001's worker fails, so T-002 (prepared while T-001 worked) is blocked and never
    starts: its tree goes with the track, and no branch of it is left."""
    repo(workspace)
    holder: dict = {}

    def broken(req):
        tree = workspace / ".clutch" / "worktrees" / holder["tid"] / "T-002"
        wait_for(lambda: (tree / ".git").is_file(), timeout=20, what="the prepared tree")
        raise RuntimeError("the model broke")
    eng = make_engine(provider=scripted({"T-001": [broken], "T-002": [ModelResponse(text="x")]}),
                      git_commits=True, max_workers=2)
    tid = holder["tid"] = track_with(eng, [
        Ticket(id="T-001", description="one", target_files=["a.txt"]),
        Ticket(id="T-002", description="two", target_files=["b.txt"], depends_on=["T-001"])])
    track = eng.start_track(tid).result(60)
    assert [k.status for k in track.tickets] == ["failed", "blocked"]
    eng.settle()
    assert not (workspace / ".clutch" / "worktrees" / tid / "T-002").exists()
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    assert "clutch-ticket" not in git(workspace, "branch", "--list")


def test_tidying_and_preparing_trees_run_below_the_tickets_own_git_work(make_engine, workspace):
    """The threads that put trees away and prepare them ahead (and the git they start) run at
    a lower priority than the ones a ticket waits on."""
    import os
    repo(workspace)
    eng = make_engine(git_commits=True)

    def niceness():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert eng._tidy_pool.submit(niceness).result(10) == base + 5
    assert eng._prep_pool.submit(niceness).result(10) == base + 5
    assert eng._git_pool.submit(niceness).result(10) == base
    git_child = eng._tidy_pool.submit(lambda: subprocess.run(
        ["sh", "-c", "nice"], capture_output=True, text=True).stdout.strip()).result(10)
    assert git_child == str(base + 5)


def test_tickets_ready_together_set_up_the_critical_one_first(make_engine, workspace,
                                                             monkeypatch):
    """When T-001 lands, T-002 (heading a chain of three) and T-005, T-006 (nothing waits on
    them) become ready at once: T-002's tree is opened and its context built before the other
    two start making theirs, so its set-up does not share the disk and the cores with theirs.
    Only the order is tested: the bound on the others' wait (0.25 s) is lifted, since on a
    loaded machine T-002's set-up here (a tree, a map, 0.1 s of context) can take longer."""
    import time
    import engine.ticket
    monkeypatch.setattr(engine.ticket, "LEAD_WAIT_S", 10.0)
    repo(workspace)
    steps = {f"T-00{i}": [call("write_file", path=f"t{i}.txt", content=f"{i}\n"),
                          ModelResponse(text="done")] for i in range(1, 7)}
    eng = make_engine(provider=scripted(steps), git_commits=True, max_workers=4)
    opened: dict[str, float] = {}
    released: dict[str, float] = {}
    tb = eng._tb
    make_tree, go, sections = tb.ticket_worktree, eng._followers_go, eng._worker_sections

    def ticket_worktree(track_id, ticket_id, **kw):
        opened.setdefault(ticket_id, time.monotonic())
        return make_tree(track_id, ticket_id, **kw)

    def followers_go(ticket_id):
        released.setdefault(ticket_id, time.monotonic())
        go(ticket_id)

    def worker_sections(track, ticket, root=None):
        if ticket.id == "T-002":          # its context takes a while (a big map): the others
            time.sleep(0.1)               # would be well into their set-up by then
        return sections(track, ticket, root=root)
    tb.ticket_worktree = ticket_worktree
    eng._followers_go = followers_go
    eng._worker_sections = worker_sections
    tid = track_with(eng, [
        Ticket(id="T-001", description="one", target_files=["t1.txt"]),
        Ticket(id="T-002", description="two", target_files=["t2.txt"], depends_on=["T-001"]),
        Ticket(id="T-003", description="three", target_files=["t3.txt"], depends_on=["T-002"]),
        Ticket(id="T-004", description="four", target_files=["t4.txt"], depends_on=["T-003"]),
        Ticket(id="T-005", description="five", target_files=["t5.txt"], depends_on=["T-001"]),
        Ticket(id="T-006", description="six", target_files=["t6.txt"], depends_on=["T-001"])])
    track = eng.start_track(tid).result(60)
    assert all(k.status == "completed" for k in track.tickets), \
        [(k.id, k.status, k.blocked_reason) for k in track.tickets]
    assert opened["T-002"] < released["T-002"] <= opened["T-005"]
    assert released["T-002"] <= opened["T-006"]
    assert not eng._leads                       # every lead released
    eng.settle()
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]


def test_trees_a_killed_run_left_for_a_completed_track_go_when_clutch_starts(make_engine,
                                                                            workspace):
    """A run killed after its track completed, before the track's trees were removed (its
    pooled trees, say): the next start of Clutch on the workspace removes them (a completed
    track is never resumed, so nothing else would), and keeps the branch and the merge."""
    repo(workspace)
    eng = make_engine(provider=scripted({"T-001": [call("write_file", path="a.txt",
                                                        content="A\n"),
                                                   ModelResponse(text="wrote a")]}),
                      git_commits=True)
    tid = track_with(eng, [Ticket(id="T-001", description="write a", target_files=["a.txt"])])
    assert eng.start_track(tid).result(60).status == "completed"
    eng.settle()
    eng._tb.prewarm(tid, 2)             # what the killed run left: two pooled trees
    eng.close()
    assert len(worktrees(workspace)) == 3
    again = make_engine(git_commits=True)
    again.settle()
    assert worktrees(workspace) == [f"worktree {workspace.resolve()}"]
    assert not (workspace / ".clutch/worktrees" / tid).exists()
    assert again.track(tid).merged_into == "main"
    assert git(workspace, "show", "main:a.txt") == "A\n"


def test_a_tree_git_was_still_registering_when_a_run_was_killed_is_cleared_at_start(
        make_engine, workspace):
    """kill -9 inside `git worktree add` can leave the tree's registration with an empty
    `commondir`: from then on `git worktree list`, `prune` and `remove` all fail, in the
    person's repository too (git 2.39). Seen by killing runs at random. The next start of
    Clutch removes such a tree of its own (locked "initializing", its .git naming the
    registration back) and leaves everything else: a finished tree, and a registration that
    names a tree which does not name it back."""
    repo(workspace)
    base = workspace / ".clutch/worktrees/core_x_20261203"
    for where in ("_making/half", "_pool/kept", "T-009"):     # registered by their last name
        git(workspace, "worktree", "add", "-q", "--no-checkout", "--lock", "--reason",
            "initializing", "--detach", str(base / where), "main")
    git(workspace, "worktree", "unlock", str(base / "_pool/kept"))     # a finished tree
    admins = workspace / ".git/worktrees"
    (admins / "half" / "commondir").write_text("")         # killed while git wrote it
    (base / "T-009/.git").write_text(f"gitdir: {admins / 'kept'}\n")   # does not name T-009
    listed = subprocess.run(["git", "-C", str(workspace), "worktree", "list"],
                            capture_output=True, text=True)
    assert listed.returncode != 0 and "commondir" in listed.stderr     # git itself is stuck
    eng = make_engine(git_commits=True)
    eng.settle()
    assert not (base / "_making").exists() and not (admins / "half").exists()
    assert (base / "_pool/kept/.git").is_file() and (admins / "kept").is_dir()
    assert (base / "T-009/.git").is_file() and (admins / "T-009").is_dir()
    assert "worktree " in git(workspace, "worktree", "list", "--porcelain")
