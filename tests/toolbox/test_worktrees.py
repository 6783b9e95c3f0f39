"""One worktree per ticket, merged in DAG order: on real git repositories with history,
branches, uncommitted changes and conflicts."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import run_threads
from toolbox.worktrees import MergeResult, TrackBranches, WorktreeError, drain_pool


def git(repo, *args, check=True) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="Dev", GIT_AUTHOR_EMAIL="dev@example.com",
               GIT_COMMITTER_NAME="Dev", GIT_COMMITTER_EMAIL="dev@example.com")
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"git {args} failed: {p.stderr}")
    return p.stdout.strip()


def make_repo(path: pathlib.Path, branch: str = "main") -> pathlib.Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    (path / "app.py").write_text("def f():\n    return 1\n\n\ndef g():\n    return 2\n")
    (path / "README.md").write_text("# demo\n")
    (path / ".gitignore").write_text("*.log\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    (path / "lib.py").write_text("X = 1\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "second")
    return path


@pytest.fixture
def repo(tmp_path) -> pathlib.Path:
    return make_repo(tmp_path / "my repo")          # a path with a space in it


@pytest.fixture(params=["libgit2", "git only"])
def tb(repo, request) -> TrackBranches:
    """Every test runs twice: with libgit2 doing the landing, the checkouts of pooled trees and
    the reads in-process, and with the git command alone (pygit2 missing, or a repository
    libgit2 cannot read): the two paths must behave the same."""
    tb, why = TrackBranches.detect(repo)
    assert why == "" and tb is not None
    if request.param == "git only":
        tb._lib = None
        tb.git.reads = None
    else:
        assert tb._lib is not None and tb._lib.plain and tb.git.reads is tb._lib
    return tb


def worktree_paths(repo) -> list[str]:
    return [ln.split(" ", 1)[1] for ln in git(repo, "worktree", "list", "--porcelain").splitlines()
            if ln.startswith("worktree ")]


def ticket_done(tb, track, ticket, files: dict[str, str], msg=None) -> str | None:
    wt = tb.ticket_worktree(track, ticket)
    for rel, text in files.items():
        (wt / rel).parent.mkdir(parents=True, exist_ok=True)
        (wt / rel).write_text(text)
    return tb.commit_ticket(wt, msg or f"{ticket}: work")


# -- detection ---------------------------------------------------------------------------------

def test_outside_git_is_not_git_with_a_reason(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    tb, why = TrackBranches.detect(d)
    assert tb is None and "not inside a git work tree" in why and "git init" in why
    t = TrackBranches(d)
    assert not t.is_git
    with pytest.raises(WorktreeError, match="not inside a git work tree"):
        t.start_track("t1")


def test_repository_without_commits_says_what_to_do(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    git(d, "init", "-q")
    tb, why = TrackBranches.detect(d)
    assert tb is None and "no commits yet" in why and "git commit --allow-empty" in why


def test_bad_ids_are_refused_clearly(tb):
    for bad in ("", "a/b", "..x", "x.lock", "-x", "a b", "x" * 101):
        with pytest.raises(WorktreeError, match="cannot name a git branch"):
            tb.start_track(bad)


# -- a track and its tickets ---------------------------------------------------------------------

def test_start_track_is_idempotent_and_remembers_the_base(tb, repo):
    head = git(repo, "rev-parse", "HEAD")
    t = tb.start_track("auth_20251201")
    assert (t.branch, t.base, t.base_sha, t.head) == ("clutch/auth_20251201", "main", head, head)
    git(repo, "commit", "-q", "--allow-empty", "-m", "user moves on")
    again = tb.start_track("auth_20251201")             # resume: the same track, same base
    assert again == t
    exclude = pathlib.Path(git(repo, "rev-parse", "--git-common-dir"))
    exclude = (repo / exclude if not exclude.is_absolute() else exclude) / "info" / "exclude"
    assert ".clutch/" in exclude.read_text().splitlines()
    assert not (repo / ".gitignore").read_text().count(".clutch")


def test_ticket_worktree_is_on_its_own_branch_and_ignored_by_the_main_tree(tb, repo):
    tb.start_track("t1")
    wt = tb.ticket_worktree("t1", "T-1")
    assert wt == repo / ".clutch" / "worktrees" / "t1" / "T-1"
    assert git(wt, "symbolic-ref", "--short", "HEAD") == "clutch-ticket/t1/T-1"
    assert (wt / "lib.py").read_text() == "X = 1\n"
    (wt / "new.py").write_text("print(1)\n")
    assert git(repo, "status", "--porcelain") == ""    # .clutch/ excluded, user's tree clean
    assert tb.ticket_worktree("t1", "T-1") == wt and (wt / "new.py").exists()   # reused
    # made locked "initializing" while its files were written, and unlocked after: git sees
    # an ordinary tree (a tree left locked would be made again at the next resume)
    listed = git(repo, "worktree", "list", "--porcelain").split("\n\n")
    assert not [w for w in listed if "locked" in w], listed
    git(repo, "worktree", "lock", str(wt))          # git agrees: it was not locked


def test_commit_ticket_stages_everything_respects_gitignore_and_none_when_unchanged(tb, repo):
    tb.start_track("t1")
    wt = tb.ticket_worktree("t1", "T-1")
    assert tb.commit_ticket(wt, "nothing") is None
    (wt / "app.py").write_text("changed\n")
    (wt / "lib.py").unlink()
    (wt / "pkg").mkdir()
    (wt / "pkg" / "m.py").write_text("M = 1\n")
    (wt / "debug.log").write_text("noise\n")
    sha = tb.commit_ticket(wt, "T-1: change things")
    assert len(sha) == 40
    assert git(repo, "show", "--name-status", "--format=%an <%ae>|%s", sha).splitlines()[:1] == \
        ["Clutch <clutch@localhost>|T-1: change things"]
    assert set(git(repo, "show", "--name-only", "--format=", sha).split()) == \
        {"app.py", "lib.py", "pkg/m.py"}
    with pytest.raises(WorktreeError, match="empty"):
        tb.commit_ticket(wt, "  ")
    with pytest.raises(WorktreeError, match="not one of Clutch's ticket worktrees"):
        tb.commit_ticket(repo, "sneaky commit in the user's tree")


def test_a_ticket_cannot_see_another_tickets_uncommitted_files(tb):
    tb.start_track("t1")
    a = tb.ticket_worktree("t1", "A")
    b = tb.ticket_worktree("t1", "B")
    (a / "half_written.py").write_text("def broken(:\n")
    (a / "app.py").write_text("garbage\n")
    out = subprocess.run(["sh", "-c", "ls; cat app.py"], cwd=b, capture_output=True, text=True)
    assert "half_written.py" not in out.stdout and "def f():" in out.stdout


def test_merge_in_dag_order_fast_forward_then_rebase_and_dependents_start_from_it(tb, repo):
    tb.start_track("t1")
    sha_a = ticket_done(tb, "t1", "A", {"a.py": "A = 1\n"})
    sha_b = ticket_done(tb, "t1", "B", {"b.py": "B = 1\n"})
    ra = tb.merge_ticket("t1", "A")
    assert (ra.how, ra.sha, ra.conflict) == ("fast-forward", sha_a, False)
    rb = tb.merge_ticket("t1", "B")                  # the track moved on: rebased onto it
    assert rb.how == "rebase" and rb.sha != sha_b
    assert git(repo, "rev-parse", "clutch/t1") == rb.sha
    assert git(repo, "rev-parse", f"{rb.sha}^") == sha_a            # linear history
    assert git(repo, "log", "-1", "--format=%s", rb.sha) == "B: work"
    c = tb.ticket_worktree("t1", "C")                # a dependent of A and B
    assert (c / "a.py").exists() and (c / "b.py").exists()
    assert tb.merge_ticket("t1", "A").how == "already merged"       # resume after a merge
    assert tb.merge_ticket("t1", "C").how == "nothing to merge"
    files, diff = tb.ticket_diff("t1", "B")
    assert files == ["b.py"] and "+B = 1" in diff and "a.py" not in diff


def test_parallel_tickets_on_the_same_file_merge_cleanly_or_name_the_conflict(tb, repo):
    tb.start_track("t1")
    base = (repo / "app.py").read_text()
    ticket_done(tb, "t1", "top", {"app.py": base.replace("return 1", "return 10")})
    ticket_done(tb, "t1", "bottom", {"app.py": base.replace("return 2", "return 20")})
    ticket_done(tb, "t1", "clash", {"app.py": base.replace("return 1", "return 99")})
    assert tb.merge_ticket("t1", "top").ok
    both = tb.merge_ticket("t1", "bottom")
    assert both.how == "rebase"
    merged = git(repo, "show", "clutch/t1:app.py")
    assert "return 10" in merged and "return 20" in merged          # neither side lost
    before = git(repo, "rev-parse", "clutch/t1")
    r = tb.merge_ticket("t1", "clash")
    assert r.conflict and r.paths == ("app.py",) and r.sha is None and not r.ok
    side = r.sides["app.py"]
    assert "return 10" in side.ours and "return 99" in side.theirs and "return 1\n" in side.base
    assert git(repo, "rev-parse", "clutch/t1") == before             # track branch untouched
    assert "conflicts in app.py" in r.message


def test_parallel_merges_from_threads_lose_nothing(tb, repo):
    tb.start_track("t1")
    n = 6
    for i in range(n):
        ticket_done(tb, "t1", f"P{i}", {f"p{i}.py": f"P = {i}\n"})
    results: dict[int, MergeResult] = {}
    run_threads(lambda i: results.__setitem__(i, tb.merge_ticket("t1", f"P{i}")), n)
    assert len(results) == n and all(r.ok and r.sha for r in results.values())
    tree = git(repo, "ls-tree", "--name-only", "clutch/t1").split()
    assert all(f"p{i}.py" in tree for i in range(n))


def test_landings_racing_with_a_slow_merge_lose_nothing(tb, repo):
    """Six finished tickets land at once (commit and fast-forward, in-process where libgit2
    may, with no lock of Clutch's held while objects are written) while a ticket of two
    commits takes git's slow path under the lock: every change reaches the track, each once."""
    tb.start_track("t1")
    n = 6
    trees = {}
    for i in range(n):
        trees[i] = tb.ticket_worktree("t1", f"P{i}")
        (trees[i] / f"p{i}.py").write_text(f"P = {i}\n")
    wt_q = tb.ticket_worktree("t1", "Q")
    for k in (1, 2):                       # two commits: never the one-commit fast path
        (wt_q / f"q{k}.py").write_text(f"Q = {k}\n")
        tb.commit_ticket(wt_q, f"Q: part {k}")
    results: dict[int, MergeResult | None] = {}

    def land(i):
        results[i] = (tb.merge_ticket("t1", "Q") if i == n else
                      tb.land_ticket("t1", f"P{i}", trees[i], f"P{i}: work"))
    run_threads(land, n + 1)
    assert len(results) == n + 1 and all(r is not None and r.ok and r.sha
                                         for r in results.values()), results
    tree = git(repo, "ls-tree", "--name-only", "clutch/t1").split()
    assert {f"p{i}.py" for i in range(n)} | {"q1.py", "q2.py"} <= set(tree)
    subjects = git(repo, "log", "--format=%s", "main..clutch/t1").splitlines()
    assert sorted(s for s in subjects if s.startswith("P")) == [f"P{i}: work" for i in range(n)]
    assert len(subjects) == n + 1, subjects      # and Q's two commits, squashed onto the track


def test_conflict_worktree_repair_and_finish(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "one", {"README.md": "# one\n"})
    ticket_done(tb, "t1", "two", {"README.md": "# two\n"})
    tb.merge_ticket("t1", "one")
    assert tb.merge_ticket("t1", "two").conflict
    cw = tb.conflict_worktree("t1", "two")
    text = (cw / "README.md").read_text()
    assert "<<<<<<<" in text and "# one" in text and "# two" in text
    assert tb.conflict_worktree("t1", "two") == cw                  # resume: same merge
    r = tb.finish_conflict("t1", "two")
    assert r.conflict and r.paths == ("README.md",) and "markers remain" in r.message
    (cw / "README.md").write_text("# one and two\n")
    done = tb.finish_conflict("t1", "two")
    assert done.ok and done.how == "merge"
    assert git(repo, "show", "clutch/t1:README.md") == "# one and two"
    assert len(git(repo, "rev-list", "--parents", "-n1", done.sha).split()) == 3
    files, _ = tb.ticket_diff("t1", "two")
    assert files == ["README.md"]
    tb.cleanup_ticket("t1", "two")
    tb.cleanup_ticket("t1", "one")
    assert worktree_paths(repo) == [str(repo)]


def test_repair_that_cannot_resolve_leaves_the_track_intact(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "one", {"lib.py": "X = 'one'\n"})
    ticket_done(tb, "t1", "two", {"lib.py": "X = 'two'\n"})
    tb.merge_ticket("t1", "one")
    tip = git(repo, "rev-parse", "clutch/t1")
    cw = tb.conflict_worktree("t1", "two")
    r = tb.finish_conflict("t1", "two")                 # the repair changed nothing
    assert r.conflict and "lib.py" in r.paths
    assert git(repo, "rev-parse", "clutch/t1") == tip
    assert git(repo, "show", "clutch/t1:lib.py") == "X = 'one'"
    tb.cleanup_ticket("t1", "two", discard=True)        # the person drops the ticket
    assert not cw.exists() and git(repo, "branch", "--list", "clutch-*/t1/two") == ""
    assert git(repo, "branch", "--list", "clutch-ticket/t1/one") != ""


# -- the track into the user's branch --------------------------------------------------------------

def test_merge_track_into_a_clean_checked_out_branch_updates_the_tree(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"a.py": "A = 1\n"})
    tb.merge_ticket("t1", "A")
    r = tb.merge_track("t1")
    assert (r.how, r.merged_into) == ("fast-forward", "main")
    assert (repo / "a.py").read_text() == "A = 1\n" and git(repo, "status", "--porcelain") == ""
    assert tb.merge_track("t1").how == "up-to-date"
    tb.cleanup_track("t1")
    assert worktree_paths(repo) == [str(repo)]
    assert git(repo, "branch", "--list", "clutch*") == ""


def test_uncommitted_user_edits_survive_byte_for_byte(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"a.py": "A = 1\n", "lib.py": "X = 2\n"})
    tb.merge_ticket("t1", "A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "the user commits meanwhile")
    dirty = b"# my edit\r\n\x00\xff not saved anywhere else\n"
    (repo / "README.md").write_bytes(dirty)             # unrelated to the track: merge proceeds
    r = tb.merge_track("t1")
    assert r.how == "merge" and r.ok
    assert (repo / "README.md").read_bytes() == dirty
    assert (repo / "a.py").read_text() == "A = 1\n"
    assert git(repo, "rev-list", "--parents", "-n1", "HEAD").count(" ") == 2


def test_a_merge_that_would_overwrite_uncommitted_work_is_refused(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"lib.py": "X = 'ticket'\n"})
    tb.merge_ticket("t1", "A")
    dirty = b"X = 'mine, unsaved'\n"
    (repo / "lib.py").write_bytes(dirty)
    head = git(repo, "rev-parse", "HEAD")
    r = tb.merge_track("t1")
    assert r.how == "refused" and not r.ok and "lib.py" in r.message
    assert "kept" in r.message and "Commit or stash" in r.message
    assert (repo / "lib.py").read_bytes() == dirty and git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "rev-parse", "--verify", "clutch/t1")
    with pytest.raises(WorktreeError, match="not merged"):
        tb.cleanup_track("t1")                          # the branch is kept for later
    tb.cleanup_track("t1", keep_branch=True)
    assert git(repo, "rev-parse", "--verify", "clutch/t1")


def test_an_untracked_user_file_in_the_way_is_refused_not_overwritten(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"notes.txt": "from the ticket\n"})
    tb.merge_ticket("t1", "A")
    (repo / "notes.txt").write_text("the user's own notes\n")
    r = tb.merge_track("t1")
    assert r.how == "refused" and "notes.txt" in r.message
    assert (repo / "notes.txt").read_text() == "the user's own notes\n"


def test_merge_track_conflict_with_the_users_branch_touches_nothing(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"lib.py": "X = 'ticket'\n"})
    tb.merge_ticket("t1", "A")
    (repo / "lib.py").write_text("X = 'user'\n")
    git(repo, "commit", "-q", "-am", "user change")
    head = git(repo, "rev-parse", "HEAD")
    r = tb.merge_track("t1")
    assert r.conflict and r.paths == ("lib.py",)
    assert "'user'" in r.sides["lib.py"].ours and "'ticket'" in r.sides["lib.py"].theirs
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""


def test_merge_track_into_a_branch_not_checked_out_moves_only_the_ref(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"a.py": "A = 1\n"})
    tb.merge_ticket("t1", "A")
    git(repo, "switch", "-q", "-c", "other")
    r = tb.merge_track("t1")                            # into "main", no longer checked out
    assert r.how == "fast-forward" and git(repo, "rev-parse", "main") == r.sha
    assert not (repo / "a.py").exists()


def test_detached_head_track_needs_a_target_branch(tb, repo):
    git(repo, "switch", "-q", "--detach", "HEAD~1")
    t = tb.start_track("t1")
    assert t.base is None and t.base_sha == git(repo, "rev-parse", "HEAD")
    ticket_done(tb, "t1", "A", {"a.py": "A\n"})
    tb.merge_ticket("t1", "A")
    with pytest.raises(WorktreeError, match="detached HEAD"):
        tb.merge_track("t1")
    r = tb.merge_track("t1", into="main")
    assert r.how == "merge" and git(repo, "show", "main:a.py") == "A"


# -- undo ---------------------------------------------------------------------------------------

def test_revert_one_ticket_on_the_track_and_on_the_users_branch(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"a.py": "A\n"})
    ticket_done(tb, "t1", "B", {"b.py": "B\n"})
    sha_a = tb.merge_ticket("t1", "A").sha
    tb.merge_ticket("t1", "B")
    new = tb.revert_ticket("t1", sha_a)
    tree = git(repo, "ls-tree", "--name-only", "clutch/t1").split()
    assert "a.py" not in tree and "b.py" in tree and git(repo, "rev-parse", "clutch/t1") == new
    assert git(repo, "status", "--porcelain") == ""
    tb.merge_track("t1")
    (repo / "README.md").write_text("dirty but unrelated\n")
    sha_b = git(repo, "rev-parse", "HEAD~1")
    tb.revert_ticket("t1", sha_b, on="main")
    assert not (repo / "b.py").exists() and (repo / "README.md").read_text() == \
        "dirty but unrelated\n"
    with pytest.raises(WorktreeError, match="names no commit"):
        tb.revert_ticket("t1", "deadbeef")


def test_revert_that_conflicts_changes_nothing(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"lib.py": "X = 'a'\n"})
    ticket_done(tb, "t1", "B", {"other.py": "1\n"})
    sha_a = tb.merge_ticket("t1", "A").sha
    tb.merge_ticket("t1", "B")
    wt = tb.ticket_worktree("t1", "C")
    (wt / "lib.py").write_text("X = 'c'\n")
    tb.commit_ticket(wt, "C")
    tb.merge_ticket("t1", "C")
    tip = git(repo, "rev-parse", "clutch/t1")
    with pytest.raises(WorktreeError, match="conflicts with later changes in lib.py"):
        tb.revert_ticket("t1", sha_a)
    assert git(repo, "rev-parse", "clutch/t1") == tip
    assert worktree_paths(repo)[0] == str(repo) and not any("_scratch" in p
                                                             for p in worktree_paths(repo))


def test_every_worktree_add_and_prune_waits_for_the_others(tb, repo, monkeypatch):
    """git makes a new tree's .git/worktrees/<name>/ a moment before the `locked` file that
    keeps `git worktree prune` away, and a prune in that moment deletes it: a revert's
    scratch tree failed so ("could not open .../locked for writing") while a finished
    track's tidying pruned. Every add and prune Clutch runs holds the administration lock."""
    unguarded: list[str] = []
    run = tb.git.run

    def checked(*args, **kw):
        if args[:1] == ("worktree",) and args[1:2] in (("add",), ("prune",)) and \
                not tb._dirs._admin._is_owned():
            unguarded.append(" ".join(args[:2]))
        return run(*args, **kw)
    monkeypatch.setattr(tb.git, "run", checked)
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"a.py": "A\n"})
    sha = tb.merge_ticket("t1", "A").sha
    tb.revert_ticket("t1", sha)                       # a scratch tree: add, then remove
    tb.cleanup_track("t1", keep_branch=True, discard=True)
    drain_pool(tb, "t1")
    assert unguarded == []


# -- resume and cleanup ----------------------------------------------------------------------------

def test_resume_reuses_a_healthy_worktree_and_recreates_broken_ones(tb, repo):
    tb.start_track("t1")
    wt = tb.ticket_worktree("t1", "A")
    (wt / "a.py").write_text("A\n")
    sha = tb.commit_ticket(wt, "A")
    # the process died; a new one comes up
    tb2 = TrackBranches(repo)
    assert tb2.ticket_worktree("t1", "A") == wt and git(wt, "rev-parse", "HEAD") == sha
    # the directory was deleted behind git's back: recreated on the same branch, commit kept
    import shutil
    shutil.rmtree(wt)
    again = tb2.ticket_worktree("t1", "A")
    assert again == wt and (wt / "a.py").read_text() == "A\n"
    # a locked, half-made worktree (killed during `git worktree add`)
    git(repo, "worktree", "lock", "--reason", "initializing", str(wt))
    (wt / ".git").unlink()
    again = tb2.ticket_worktree("t1", "A")
    assert (again / "a.py").read_text() == "A\n" and git(again, "rev-parse", "HEAD") == sha
    # a stray directory git does not know: its files are set aside, not lost
    stray = tb2.worktree_path("t1", "B")
    stray.mkdir(parents=True)
    (stray / "precious.txt").write_text("keep me\n")
    tb2.ticket_worktree("t1", "B")
    found = list((repo / ".clutch" / "lost+found").rglob("precious.txt"))
    assert found and found[0].read_text() == "keep me\n"


def test_cleanup_refuses_to_lose_work_and_leaves_only_the_main_tree(tb, repo):
    tb.start_track("t1")
    ticket_done(tb, "t1", "A", {"a.py": "A\n"})
    wt_b = tb.ticket_worktree("t1", "B")
    (wt_b / "b.py").write_text("unsaved\n")
    with pytest.raises(WorktreeError, match="not merged"):
        tb.cleanup_ticket("t1", "A")
    tb.merge_ticket("t1", "A")
    tb.cleanup_ticket("t1", "A")
    assert git(repo, "branch", "--list", "clutch-ticket/t1/A") == ""
    with pytest.raises(WorktreeError, match="uncommitted changes"):
        tb.cleanup_ticket("t1", "B", keep_branch=True)
    assert (wt_b / "b.py").exists()
    tb.merge_track("t1")
    tb.cleanup_track("t1", discard=True)
    assert worktree_paths(repo) == [str(repo)]
    assert [w.main for w in tb.list_worktrees()] == [True]
    assert git(repo, "branch", "--format=%(refname:short)") == "main"
    assert git(repo, "status", "--porcelain") == ""


def test_a_tree_a_killed_run_left_half_written_is_made_again_not_committed_as_deletions(
        tb, repo):
    """kill -9 while a tree prepared for ticket B had its files written (Clutch's `reset
    --hard` of a tree added locked "initializing"): on resume B gets a whole tree, and B's
    commit holds B's change only, not the files the killed run had not written yet. (Found by
    the kill -9 CLI test: a resumed ticket's commit deleted the person's app.py.)"""
    tb.start_track("t1")
    path = tb.worktree_path("t1", "B")
    path.parent.mkdir(parents=True)
    git(repo, "worktree", "add", "-q", "--no-checkout", "--lock", "--reason", "initializing",
        "--detach", str(path), "clutch/t1")
    git(path, "checkout", "HEAD", "--", "app.py")        # one file of four written, then killed
    wt = tb.ticket_worktree("t1", "B")
    assert wt == path
    assert sorted(p.name for p in wt.iterdir() if p.name != ".git") == [
        ".gitignore", "README.md", "app.py", "lib.py"]
    (wt / "b.py").write_text("B\n")
    sha = tb.commit_ticket(wt, "B: work")
    assert git(repo, "diff-tree", "--no-commit-id", "--name-status", "-r", sha).split() == [
        "A", "b.py"]
    listed = git(repo, "worktree", "list", "--porcelain").split("\n\n")
    assert not [w for w in listed if "locked" in w], listed
    assert git(wt, "symbolic-ref", "--short", "HEAD") == "clutch-ticket/t1/B"


def test_a_half_written_tree_whose_git_file_is_relative_is_made_again(tb, repo):
    """The same when the tree's .git names its registration by a relative path (what git
    writes with worktree.useRelativePaths): read relative to the tree, as git reads it."""
    tb.start_track("t1")
    path = tb.worktree_path("t1", "B")
    path.parent.mkdir(parents=True)
    git(repo, "worktree", "add", "-q", "--no-checkout", "--lock", "--reason", "initializing",
        "--detach", str(path), "clutch/t1")
    admin = (path / ".git").read_text().split(":", 1)[1].strip()
    (path / ".git").write_text(f"gitdir: {os.path.relpath(admin, path)}\n")
    assert git(path, "rev-parse", "--absolute-git-dir") == admin      # git reads it so too
    git(path, "checkout", "HEAD", "--", "app.py")        # one file of four written, then killed
    wt = tb.ticket_worktree("t1", "B")
    assert sorted(p.name for p in wt.iterdir() if p.name != ".git") == [
        ".gitignore", "README.md", "app.py", "lib.py"]


def test_a_clean_tree_is_read_once_before_it_is_removed(tb, repo, monkeypatch):
    """Removing a merged ticket's tree reads its status once (a `git status` of every file
    costs as much as the removal on a big tree), and with `discard` not at all."""
    tb.start_track("t1")
    for tid in ("A", "B"):
        ticket_done(tb, "t1", tid, {f"{tid}.py": "X = 1\n"})
        tb.merge_ticket("t1", tid)
    statuses = []
    real = type(tb.git).run

    def run(self, *args, **kw):
        if args and args[0] == "status":
            statuses.append(kw.get("cwd"))
        return real(self, *args, **kw)
    monkeypatch.setattr(type(tb.git), "run", run)
    tb.cleanup_ticket("t1", "A")
    assert statuses == [tb.worktree_path("t1", "A")]
    tb.cleanup_ticket("t1", "B", discard=True)
    assert len(statuses) == 1
    assert worktree_paths(repo) == [str(repo)]


def test_workspace_in_a_subdirectory_maps_into_the_worktree(tmp_path):
    repo = make_repo(tmp_path / "r")
    (repo / "sub").mkdir()
    (repo / "sub" / "x.txt").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "sub")
    tb = TrackBranches(repo / "sub")
    tb.start_track("t1")
    wt = tb.ticket_worktree("t1", "A")
    assert wt.parent.parent.parent.parent == repo       # under <repo>/.clutch/worktrees
    assert (tb.workspace_path(wt) / "x.txt").read_text() == "x\n"
    # what changed between two commits, as the worker's directory names it (outside: left out)
    at = git(wt, "rev-parse", "HEAD")
    (wt / "sub" / "y.txt").write_text("y\n")
    (wt / "top.txt").write_text("t\n")
    tb.commit_ticket(wt, "A: two files")
    head = git(wt, "rev-parse", "HEAD")
    assert tb.changed_since(wt, at) == (head, ["y.txt"])


def test_merge_result_is_plain_data():
    r = MergeResult(sha="a" * 40, how="fast-forward")
    assert r.ok and not r.conflict and r.paths == () and r.sides == {}


def test_recycled_worktrees_carry_nothing_over_and_the_track_cleanup_drains_them(tb, repo):
    tb.start_track("t1")
    wt_a = tb.ticket_worktree("t1", "A")
    (wt_a / "a.py").write_text("A\n")
    (wt_a / "build.log").write_text("ignored leftover\n")         # ignored by .gitignore
    tb.commit_ticket(wt_a, "A")
    tb.merge_ticket("t1", "A")
    tb.cleanup_ticket("t1", "A", recycle=True)
    assert not wt_a.exists() and len(worktree_paths(repo)) == 2    # one tree in the pool
    assert git(repo, "branch", "--list", "clutch-ticket/t1/A") == ""
    wt_b = tb.ticket_worktree("t1", "B")                           # taken from the pool
    assert len(worktree_paths(repo)) == 2
    assert git(wt_b, "symbolic-ref", "--short", "HEAD") == "clutch-ticket/t1/B"
    assert git(wt_b, "rev-parse", "HEAD") == git(repo, "rev-parse", "clutch/t1")
    assert (wt_b / "a.py").read_text() == "A\n" and not (wt_b / "build.log").exists()
    assert git(wt_b, "status", "--porcelain", "--ignored") == ""
    wt_c = tb.ticket_worktree("t1", "C")                           # pool empty: a new one
    (wt_c / "half.py").write_text("unsaved\n")
    with pytest.raises(WorktreeError, match="uncommitted"):
        tb.cleanup_ticket("t1", "C", recycle=True, keep_branch=True)
    tb.cleanup_ticket("t1", "B", recycle=True)
    tb.merge_track("t1")
    tb.cleanup_track("t1", discard=True)
    assert worktree_paths(repo) == [str(repo)]
    assert not (repo / ".clutch" / "worktrees" / "t1").exists()


def test_prewarm_fills_the_pool_and_tickets_take_from_it(tb, repo):
    tb.start_track("t1")
    assert tb.prewarm("t1", 2) == 2 and tb.prewarm("t1", 2) == 2
    ticket_done(tb, "t1", "A", {"a.py": "A\n"})
    tb.merge_ticket("t1", "A")
    wt_b = tb.ticket_worktree("t1", "B")        # pooled tree at the old tip, moved to the new one
    assert (wt_b / "a.py").read_text() == "A\n"
    assert len(worktree_paths(repo)) == 3       # main, A, B: both pooled trees taken
    with pytest.raises(WorktreeError, match="count must be"):
        tb.prewarm("t1", -1)
    tb.merge_track("t1")
    tb.cleanup_track("t1", discard=True)
    assert worktree_paths(repo) == [str(repo)]


def test_a_new_tree_is_written_on_every_core_and_the_persons_tree_keeps_its_setting(
        tb, repo, tmp_path, monkeypatch):
    """git's parallel checkout (its `checkout--worker` processes, seen in its own trace) writes
    a whole new tree of Clutch's; the merge into the person's tree runs with their config."""
    many = {f"pkg/m{i:03d}.py": f"V = {i}\n" for i in range(150)}   # git's threshold is 100
    for rel, text in many.items():
        (repo / rel).parent.mkdir(exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "150 modules")
    trace = tmp_path / "trace2.txt"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    tb.start_track("t1")
    wt = tb.ticket_worktree("t1", "A")                  # no pool: a fresh tree
    assert "checkout--worker" in trace.read_text()
    assert git(wt, "status", "--porcelain") == ""
    assert {rel: (wt / rel).read_text() for rel in many} == many
    trace.write_text("")
    for i in range(120):                                # the person's tree gets 120 changes
        (wt / f"pkg/m{i:03d}.py").write_text(f"V = {i + 1}\n")
    tb.commit_ticket(wt, "A: bump")
    assert tb.merge_ticket("t1", "A").ok
    assert tb.merge_track("t1").merged_into == "main"
    assert "checkout--worker" not in trace.read_text()
    assert (repo / "pkg/m119.py").read_text() == "V = 120\n"
    assert git(repo, "status", "--porcelain") == ""
    tb.cleanup_track("t1")
    assert worktree_paths(repo) == [str(repo)]


def test_a_new_tree_that_cannot_be_written_is_removed_not_left_half_made(tb, repo, monkeypatch):
    """git fails while writing a new tree's files (a full disk, say): the ticket hears why, and
    the half-made tree is removed at once instead of staying locked "initializing"; the next
    attempt makes it whole."""
    tb.start_track("t1")
    real = type(tb.git).run

    def run(self, *args, **kw):
        if args[:1] == ("reset",):
            raise WorktreeError("git reset failed (exit 128): No space left on device")
        return real(self, *args, **kw)
    monkeypatch.setattr(type(tb.git), "run", run)
    with pytest.raises(WorktreeError, match="No space left"):
        tb.ticket_worktree("t1", "A")
    assert worktree_paths(repo) == [str(repo)]
    assert not tb.worktree_path("t1", "A").exists()
    monkeypatch.setattr(type(tb.git), "run", real)
    wt = tb.ticket_worktree("t1", "A")
    assert (wt / "app.py").read_text() == (repo / "app.py").read_text()
    assert git(wt, "status", "--porcelain") == ""
    tb.cleanup_ticket("t1", "A", discard=True)
    assert worktree_paths(repo) == [str(repo)]


def test_draining_a_track_with_no_prepared_tree_starts_no_git(tb, repo, monkeypatch):
    """Closing the app drains every planned track's pool: one that has none costs no git
    process; one with a pooled tree and a half-made one loses both."""
    calls: list[tuple] = []
    real = type(tb.git).run

    def run(self, *args, **kw):
        calls.append(args)
        return real(self, *args, **kw)
    tb.start_track("t1")
    monkeypatch.setattr(type(tb.git), "run", run)
    drain_pool(tb, "t1")
    assert calls == []
    assert tb.prewarm("t1", 1) == 1
    half = tb.worktree_path("t1", "x").parent / "_making" / "left-by-a-kill"
    half.mkdir(parents=True)
    drain_pool(tb, "t1")
    assert worktree_paths(repo) == [str(repo)]
    assert not (tb.worktree_path("t1", "x").parent / "_pool").exists() and not half.exists()


def test_a_resumed_track_clears_the_locks_a_killed_run_left(tb, repo):
    """`kill -9` while git or libgit2 moves a ref leaves `<ref>.lock`, and every later move of
    that ref fails on it (a resumed run's ticket once failed so). The track's start clears
    its own: its ticket's branch and its tree's index; another track's lock is left alone."""
    tb.start_track("t1")
    tb.start_track("t2")
    wt = tb.ticket_worktree("t1", "A")
    common = pathlib.Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    admin = pathlib.Path(git(wt, "rev-parse", "--path-format=absolute", "--git-dir"))
    stale = [common / "refs/heads/clutch-ticket/t1/B.lock", common / "refs/heads/clutch/t1.lock",
             admin / "index.lock"]
    other = common / "refs/heads/clutch-ticket/t2/C.lock"
    for p in (*stale, other):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    with pytest.raises(WorktreeError, match="lock"):
        ticket_done(tb, "t1", "B", {"b.py": "B\n"})
    # a tree whose .git a worker pointed at the person's repository: its lock is not Clutch's
    rogue = tb.worktree_path("t1", "R")
    rogue.mkdir()
    (rogue / ".git").write_text(f"gitdir: {common}\n")
    persons = common / "index.lock"
    persons.write_text("")
    tb.start_track("t1")                        # the resumed run
    assert not any(p.exists() for p in stale) and other.exists() and persons.exists()
    persons.unlink()
    shutil.rmtree(rogue)
    assert ticket_done(tb, "t1", "B", {"b.py": "B\n"})
    (wt / "a.py").write_text("A\n")
    assert tb.commit_ticket(wt, "A\n")
    other.unlink()
