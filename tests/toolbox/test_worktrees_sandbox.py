"""A ticket's worker, in its worktree and the real bwrap sandbox, sees neither another
ticket's uncommitted files nor the user's; git still reads its own worktree."""
from __future__ import annotations

from test_worktrees import git, make_repo
from toolbox.worktrees import TrackBranches
from tools import Workspace


def test_a_tickets_shell_cannot_see_another_tickets_uncommitted_files(tmp_path):
    repo = make_repo(tmp_path / "my repo")
    tb = TrackBranches(repo)
    tb.start_track("t1")
    a = tb.ticket_worktree("t1", "A")
    b = tb.ticket_worktree("t1", "B")
    (a / "half_written.py").write_text("SECRET_HALF_DONE = 1\n")
    ws_b = Workspace(tb.workspace_path(b), sandbox_hide=tb.sandbox_hide(), shell_timeout_s=30)
    assert ws_b.sandbox_status().ready, ws_b.sandbox_status().message
    r = ws_b.run_shell(f"cat '{a}/half_written.py'; ls '{repo}/.clutch/worktrees/t1'; "
                       f"git status --porcelain; git rev-parse --abbrev-ref HEAD; echo edited > x.py")
    assert "SECRET_HALF_DONE" not in r.output and "No such file" in r.output, r.output
    assert "clutch-ticket/t1/B" in r.output
    assert (b / "x.py").read_text() == "edited\n" and not (a / "x.py").exists()
    sha = tb.commit_ticket(b, "B: x")                   # the commit is made outside the sandbox
    assert git(repo, "show", "--name-only", "--format=", sha) == "x.py"
    denied = ws_b.run_shell("git commit --allow-empty -q -m sneaky")  # .git is read-only inside
    assert git(repo, "rev-parse", "clutch-ticket/t1/B") == sha, denied.output
