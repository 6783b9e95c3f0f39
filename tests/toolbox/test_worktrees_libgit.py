"""The in-process (libgit2) half of the worktree layer, checked against git itself on real
repositories: it must answer as git answers, write what git would write, and step aside
wherever git would do something it does not (filters, sparse checkouts, overlapping edits)."""
from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from test_worktrees import git, make_repo, worktree_paths
from toolbox.worktrees import TrackBranches
from toolbox.worktrees_libgit import LibGit
from toolbox.worktrees_model import GitRunner


@pytest.fixture
def repo(tmp_path) -> pathlib.Path:
    r = make_repo(tmp_path / "repo")
    git(r, "tag", "-a", "v1", "-m", "release 1")          # an annotated tag: peels to a commit
    git(r, "branch", "side", "HEAD~1")
    return r


def test_reads_answer_exactly_as_git_does(repo):
    lib = LibGit.open(repo)
    assert lib is not None and lib.plain
    fast, slow = GitRunner(repo, reads=lib), GitRunner(repo)
    head = git(repo, "rev-parse", "HEAD")
    blob = git(repo, "rev-parse", "HEAD:app.py")
    refs = ["HEAD", "main", "refs/heads/main", head, head[:7], "HEAD^", "HEAD~1", "v1",
            "refs/tags/v1", "side", "nope", "refs/heads/nope", "HEAD~99", blob, "0" * 40, ""]
    for ref in refs:
        assert fast.rev(ref) == slow.rev(ref), ref
    for a, b in [("side", "main"), ("main", "side"), ("main", "main"), ("v1", "main"),
                 (head, "side")]:
        assert fast.is_ancestor(a, b) == slow.is_ancestor(a, b), (a, b)


def test_a_ticket_lands_in_one_step_and_leaves_a_clean_tree(repo):
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    wt = tb.ticket_worktree("t", "A")
    (wt / "new.py").write_text("N = 1\n")
    (wt / "app.py").unlink()                       # a deletion is staged too
    (wt / "debug.log").write_text("ignored\n")     # .gitignore is respected
    res = tb.land_ticket("t", "A", wt, "A: work\n")
    assert res.how == "fast-forward"
    tip = git(repo, "rev-parse", "clutch/t")
    assert res.sha == tip == git(repo, "rev-parse", "clutch-ticket/t/A") \
        == git(repo, "rev-parse", "refs/clutch/merged/t/A")
    assert git(repo, "ls-tree", "--name-only", "clutch/t").split() == \
        [".gitignore", "README.md", "lib.py", "new.py"]
    assert git(repo, "log", "-1", "--format=%an <%ae>|%s", "clutch/t") == \
        "Clutch <clutch@localhost>|A: work"
    assert git(wt, "status", "--porcelain") == ""          # index and HEAD agree
    assert git(repo, "fsck", "--no-progress") == ""
    assert tb.land_ticket("t", "A", wt, "again\n") is None  # nothing changed: nothing landed


def _git_rebased_tree(repo, wt, fork: str, onto: str, tmp: pathlib.Path) -> str:
    """The tree git itself makes of the worktree's changes committed on ``fork`` and rebased
    onto ``onto`` (``git add -A`` into a copy of the tree's index, ``git merge-tree``): the
    tree's own index and branch are left as they are."""
    index = tmp / "index.copy"
    index.write_bytes(pathlib.Path(git(wt, "rev-parse", "--path-format=absolute",
                                       "--git-path", "index")).read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_INDEX_FILE=str(index), GIT_AUTHOR_NAME="Dev", GIT_AUTHOR_EMAIL="d@e",
               GIT_COMMITTER_NAME="Dev", GIT_COMMITTER_EMAIL="d@e")

    def run(*args):
        return subprocess.run(["git", "-C", str(wt), *args], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()
    run("add", "-A")
    commit = run("commit-tree", run("write-tree"), "-p", fork, "-m", "git's")
    return git(repo, "merge-tree", "--write-tree", onto, commit).split()[0]


def test_a_rebase_over_other_paths_makes_the_tree_git_would(repo, tmp_path):
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    a, b = tb.ticket_worktree("t", "A"), tb.ticket_worktree("t", "B")
    (a / "a.py").write_text("A = 1\n")
    (b / "b.py").write_text("B = 1\n")
    (b / "app.py").write_text((b / "app.py").read_text().replace("return 2", "return 20"))
    (b / "lib.py").unlink()
    assert tb.land_ticket("t", "A", a, "A\n").how == "fast-forward"
    before, fork = git(repo, "rev-parse", "clutch/t"), git(repo, "rev-parse", "main")
    expected = _git_rebased_tree(repo, b, fork, before, tmp_path)
    res = tb.land_ticket("t", "B", b, "B: other paths\n")
    assert res.how == "rebase"
    assert git(repo, "rev-parse", "clutch/t^{tree}") == expected
    assert git(repo, "rev-parse", "clutch/t^") == before        # one commit on the track
    assert git(repo, "log", "-1", "--format=%an <%ae>|%s", "clutch/t") == \
        "Clutch <clutch@localhost>|B: other paths"
    # landed in one transaction with its marker; then B's tree was put on the landed commit:
    # its branch there, nothing uncommitted, A's file written into it
    assert git(repo, "rev-parse", "refs/clutch/merged/t/B") == res.sha == \
        git(repo, "rev-parse", "clutch/t") == git(repo, "rev-parse", "clutch-ticket/t/B")
    assert git(b, "status", "--porcelain", "--untracked-files=all") == ""
    assert (b / "a.py").read_text() == "A = 1\n" and not (b / "lib.py").exists()
    assert git(repo, "fsck", "--no-progress", "--no-dangling") == ""   # git's commit dangles


def test_a_tree_moved_after_its_landing_is_not_settled_but_removed(repo):
    """Someone committed in the tree between its landing and its tidying: it is not reset
    (that would drop their commit from the tree), and tidying removes it instead of pooling
    it; the landing itself stays on the track."""
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    b = tb.ticket_worktree("t", "B")
    (b / "b.py").write_text("B = 1\n")
    res = tb.land_ticket("t", "B", b, "B\n", settle=False)
    git(b, "commit", "-q", "--allow-empty", "-m", "by hand, after the landing")
    assert tb.settle_landed(b, res) is False          # b.py is still uncommitted there
    assert git(b, "log", "-1", "--format=%s") == "by hand, after the landing"
    tb.cleanup_ticket("t", "B", discard=True, recycle=True, keep_branch=True)
    assert not b.exists() and not list(tb._pool("t").glob("*"))
    assert git(repo, "show", "clutch/t:b.py") == "B = 1"


def _case_same_new_dir(a, b):
    for t, name in ((a, "x"), (b, "y")):
        (t / "pkg").mkdir()
        (t / "pkg" / f"{name}.py").write_text(f"{name} = 1\n")


def _case_dir_emptied(a, b):
    (a / "other.py").write_text("O = 1\n")
    (a / "pkg" / "keep.py").write_text("K = 2\n")     # A edits beside what B empties
    for p in ("sub/only.py", "sub/deeper/x.py", "lib.py"):     # "sub" goes as a whole
        (b / p).unlink()
    (b / "deep" / "er").mkdir(parents=True)               # and app.py moves down two levels
    (b / "app.py").rename(b / "deep" / "er" / "app.py")


_case_dir_emptied.base = {"sub/only.py": "S = 1\n", "sub/deeper/x.py": "X = 1\n",
                          "pkg/keep.py": "K = 1\n"}


def _case_modes(a, b):
    (a / "README.md").write_text("# changed by A\n")
    os.chmod(b / "app.py", 0o755)
    os.symlink("app.py", b / "link.py")


def _case_everything_deleted(a, b):
    for name in ("app.py", "lib.py", "README.md", ".gitignore"):
        (b / name).unlink()


def _case_file_against_directory(a, b):
    (a / "docs").write_text("a file named docs\n")
    (b / "docs").mkdir()
    (b / "docs" / "guide.md").write_text("# guide\n")


@pytest.mark.parametrize("case", [_case_same_new_dir, _case_dir_emptied, _case_modes,
                                  _case_everything_deleted, _case_file_against_directory],
                         ids=lambda c: c.__name__.removeprefix("_case_"))
def test_a_landing_straight_from_the_index_makes_the_tree_git_would(repo, tmp_path, case):
    """B's staged change applied to the track tip directory by directory is what git's own
    commit and merge make of it; a file on one side where the other has a directory is left
    to git (here: a conflict, the track keeping A's file)."""
    for path, text in getattr(case, "base", {}).items():    # what the case needs at the start
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    if getattr(case, "base", None):
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "the case's base")
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    a, b = tb.ticket_worktree("t", "A"), tb.ticket_worktree("t", "B")
    case(a, b)
    landed_a = tb.land_ticket("t", "A", a, "A\n") if git(a, "status", "--porcelain") else None
    before, fork = git(repo, "rev-parse", "clutch/t"), git(repo, "rev-parse", "main")
    if case is _case_file_against_directory:
        res = tb.land_ticket("t", "B", b, "B\n")
        assert landed_a is not None and res.conflict and not res.settle
        assert res.paths and all(p.startswith("docs") for p in res.paths)
        assert git(repo, "rev-parse", "clutch/t") == before
        return
    expected = _git_rebased_tree(repo, b, fork, before, tmp_path)
    res = tb.land_ticket("t", "B", b, "B\n")
    assert res.settle and res.how == ("fast-forward" if landed_a is None else "rebase")
    assert git(repo, "rev-parse", "clutch/t^{tree}") == expected
    assert git(repo, "rev-parse", "clutch/t^") == before
    assert git(b, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(repo, "fsck", "--no-progress", "--no-dangling") == ""


@pytest.mark.parametrize("left", ["nothing", "an edit"])
def test_what_a_worker_committed_itself_lands_too(repo, left):
    """A worker that ran ``git commit`` in its tree (and left nothing, or more, uncommitted):
    its commits are merged onto the track like any ticket's change, never dropped as
    "nothing changed"."""
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    a, b = tb.ticket_worktree("t", "A"), tb.ticket_worktree("t", "B")
    (a / "a.py").write_text("A = 1\n")
    tb.land_ticket("t", "A", a, "A\n")
    (b / "b.py").write_text("B = 1\n")
    git(b, "add", "b.py")
    git(b, "commit", "-q", "-m", "the worker's own commit")
    if left == "an edit":
        (b / "README.md").write_text("# more\n")
    res = tb.land_ticket("t", "B", b, "B\n")
    assert res is not None and res.ok and res.sha == git(repo, "rev-parse", "clutch/t")
    assert git(repo, "show", "clutch/t:b.py") == "B = 1"
    assert git(repo, "show", "clutch/t:a.py") == "A = 1"
    assert git(repo, "show", "clutch/t:README.md") == ("# more" if left == "an edit" else "# demo")
    again = tb.land_ticket("t", "B", b, "B again\n")         # landed: not landed twice
    assert again.how == "already merged" and again.sha == res.sha


def test_a_landing_left_unsettled_keeps_the_tickets_change_until_it_is_settled(repo):
    """The engine lands with settle=False (its dependents wait for the landing, not for the
    tree's tidying): the ticket's branch and index are not written on the way, the change is
    in the tree uncommitted, and settle_landed later puts the tree on the landed commit."""
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    a, b = tb.ticket_worktree("t", "A"), tb.ticket_worktree("t", "B")
    (a / "pkg").mkdir()
    (a / "pkg" / "a.py").write_text("A = 1\n")
    (b / "b.py").write_text("B = 1\n")
    start = git(repo, "rev-parse", "clutch-ticket/t/B")
    tb.land_ticket("t", "A", a, "A\n")
    res = tb.land_ticket("t", "B", b, "B\n", settle=False)
    assert res.settle and res.sha == git(repo, "rev-parse", "clutch/t")
    assert git(repo, "rev-parse", "clutch-ticket/t/B") == start
    assert git(b, "status", "--porcelain", "--untracked-files=all") == "?? b.py"
    assert tb.settle_landed(b, res) is True
    assert git(repo, "rev-parse", "clutch-ticket/t/B") == res.sha
    assert git(b, "status", "--porcelain", "--untracked-files=all") == ""
    assert (b / "pkg" / "a.py").read_text() == "A = 1\n"
    tb.cleanup_ticket("t", "B", recycle=True)         # a clean tree: pooled, not removed
    assert not b.exists() and len(list((tb._pool("t")).iterdir())) == 1


def _both_edit_app(repo):
    """A and B each edit app.py (hunks far apart); A has landed. (tb, B's tree, the track
    tip before B)."""
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    a, b = tb.ticket_worktree("t", "A"), tb.ticket_worktree("t", "B")
    (a / "app.py").write_text((a / "app.py").read_text().replace("return 1", "return 10"))
    (b / "app.py").write_text((b / "app.py").read_text().replace("return 2", "return 20"))
    tb.land_ticket("t", "A", a, "A\n")
    return tb, b, git(repo, "rev-parse", "clutch/t")


def test_a_landing_whose_rebase_is_gits_commits_in_process_and_merges_with_git(repo):
    """The track moved by an edit of the same file: the ticket's commit is made in-process,
    only its own branch moves there, and git's merge decides the track's tree."""
    tb, b, before = _both_edit_app(repo)
    res = tb.land_ticket("t", "B", b, "B\n")
    assert res.how == "rebase" and res.sha == git(repo, "rev-parse", "clutch/t")
    expected = git(repo, "merge-tree", "--write-tree", before, "clutch-ticket/t/B").split()[0]
    assert git(repo, "rev-parse", "clutch/t^{tree}") == expected
    assert git(repo, "rev-parse", "clutch-ticket/t/B^") == git(repo, "rev-parse", "main")
    assert git(repo, "fsck", "--no-progress") == ""


def test_two_edits_of_one_file_are_left_to_gits_own_merge(repo):
    """Both sides touched app.py: libgit2 steps aside and git decides (here: a clean merge of
    two hunks far apart); the result is git's merge-tree result exactly."""
    tb, b, before = _both_edit_app(repo)
    assert tb.commit_ticket(b, "B\n")
    assert tb._lib.land("refs/heads/clutch/t", "refs/heads/clutch-ticket/t/B",
                        "refs/clutch/merged/t/B") is None          # not for libgit2
    res = tb.merge_ticket("t", "B")
    assert res.how == "rebase"
    expected = git(repo, "merge-tree", "--write-tree", before, "clutch-ticket/t/B").split()[0]
    assert git(repo, "rev-parse", "clutch/t^{tree}") == expected
    text = git(repo, "show", "clutch/t:app.py")
    assert "return 10" in text and "return 20" in text


def test_a_filter_driver_keeps_libgit2_away_from_the_files(repo):
    """A clean/smudge filter (as LFS installs) runs only in git: with one configured, staging
    and checkouts go through git, so what is committed is what git's filter made of it."""
    git(repo, "config", "filter.upper.clean", "tr a-z A-Z")
    git(repo, "config", "filter.upper.smudge", "cat")
    (repo / ".gitattributes").write_text("*.txt filter=upper\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "attributes")
    tb, _ = TrackBranches.detect(repo)
    assert tb._lib is not None and not tb._lib.plain
    tb.start_track("t")
    wt = tb.ticket_worktree("t", "A")
    (wt / "note.txt").write_text("quiet words\n")
    assert tb.land_ticket("t", "A", wt, "A\n").how == "fast-forward"
    assert git(repo, "show", "clutch/t:note.txt") == "QUIET WORDS"      # git's clean filter
    tb.cleanup_ticket("t", "A")
    wt2 = tb.ticket_worktree("t", "B")                  # a new tree: git's smudge filter ran
    assert (wt2 / "note.txt").read_text() == "QUIET WORDS\n"
    prepared = tb.prepare_worktree("t", "C")            # C waits for B: prepared meanwhile
    (wt2 / "more.txt").write_text("more words\n")
    tb.land_ticket("t", "B", wt2, "B\n")
    switched: list = []
    assert tb.ticket_worktree("t", "C", switched=switched) == prepared
    assert switched == []                               # git brought it forward, not libgit2
    assert git(prepared, "symbolic-ref", "--short", "HEAD") == "clutch-ticket/t/C"
    assert (prepared / "more.txt").read_text() == "MORE WORDS\n"


def test_a_sparse_checkout_keeps_libgit2_away_from_the_files(repo):
    git(repo, "config", "core.sparseCheckout", "true")
    lib = LibGit.open(repo)
    assert lib is not None and not lib.plain
    assert not lib.switch_tree(repo, None, "refs/heads/main")


def test_a_prepared_tree_is_brought_forward_to_what_landed_meanwhile(repo):
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    a = tb.ticket_worktree("t", "A")
    prepared = tb.prepare_worktree("t", "B")          # B waits for A: made while A works
    assert prepared == tb.worktree_path("t", "B")
    assert git(prepared, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"        # detached
    assert git(repo, "branch", "--list", "clutch-ticket/t/B") == ""
    assert tb.prepare_worktree("t", "B") is None       # prepared once
    at = git(prepared, "rev-parse", "HEAD")
    (a / "a.py").write_text("A = 1\n")
    (a / "lib.py").unlink()
    tb.land_ticket("t", "A", a, "A\n")
    switched: list = []
    b = tb.ticket_worktree("t", "B", switched=switched)
    assert b == prepared
    assert switched == [(at, ["a.py", "lib.py"])]     # what B's map must read again
    assert git(b, "rev-parse", "--abbrev-ref", "HEAD") == "clutch-ticket/t/B"
    assert git(b, "rev-parse", "HEAD") == git(repo, "rev-parse", "clutch/t")
    assert (b / "a.py").read_text() == "A = 1\n" and git(b, "status", "--porcelain") == ""
    tb.cleanup_ticket("t", "A", discard=True)
    tb.cleanup_track("t", keep_branch=True, discard=True)
    assert worktree_paths(repo) == [str(repo)]


def test_an_unused_prepared_tree_goes_with_its_track_and_leaves_no_branch(repo):
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    tb.prepare_worktree("t", "B")
    tb.cleanup_track("t", keep_branch=True, discard=True)
    assert worktree_paths(repo) == [str(repo)]
    assert "clutch-ticket" not in git(repo, "branch", "--list")


def test_without_pygit2_everything_goes_through_git(repo, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_pygit2(name, *a, **kw):
        if name == "pygit2" or name.startswith("pygit2."):
            raise ImportError("No module named 'pygit2'")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_pygit2)
    tb, _ = TrackBranches.detect(repo)
    assert tb._lib is None and tb.git.reads is None
    tb.start_track("t")
    wt = tb.ticket_worktree("t", "A")
    (wt / "a.py").write_text("A = 1\n")
    assert tb.land_ticket("t", "A", wt, "A\n").how == "fast-forward"
    assert subprocess.run(["git", "-C", str(repo), "show", "clutch/t:a.py"],
                          capture_output=True, text=True).stdout == "A = 1\n"


def test_a_trees_files_are_listed_as_git_lists_them(repo):
    """A worktree's repository map lists its files in-process: the same names `git ls-files
    --cached --others --exclude-standard` gives, from the tree's top and from a folder."""
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    wt = tb.ticket_worktree("t", "A")
    (wt / "pkg" / "sub").mkdir(parents=True)
    (wt / "pkg" / "sub" / "new.py").write_text("N = 1\n")      # untracked
    (wt / "pkg" / "m.py").write_text("M = 1\n")
    (wt / "trace.log").write_text("ignored\n")                  # .gitignore: *.log
    (wt / "lib.py").unlink()                                    # deleted, still in the index
    git(wt, "add", "pkg/m.py")
    listed = tb.lister()
    for where in (wt, wt / "pkg"):
        expected = git(where, "-c", "core.quotepath=off", "ls-files", "--cached", "--others",
                       "--exclude-standard").split("\n")
        assert sorted(listed(where)) == sorted(expected), where
    for i in range(300):                 # a bigger index: git lists it quicker, so git does
        (wt / "pkg" / f"m{i}.py").write_text("M\n")
    git(wt, "add", "pkg")
    assert listed(wt) is None


def test_where_a_branch_is_checked_out_is_found_as_git_finds_it(repo, tmp_path):
    from toolbox.worktrees_merge import checked_out_in
    git(repo, "worktree", "add", "-q", str(tmp_path / "side tree"), "side")
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "loose"), "main")
    git(repo, "worktree", "add", "-q", "-b", "gone", str(tmp_path / "gone"), "main")
    import shutil
    shutil.rmtree(tmp_path / "gone")                      # prunable: not where it is
    lib = LibGit.open(repo)
    fast, slow = GitRunner(repo, reads=lib), GitRunner(repo)
    for branch in ("main", "side", "gone", "nope"):
        assert checked_out_in(fast, branch) == checked_out_in(slow, branch), branch
    assert checked_out_in(fast, "side") == (tmp_path / "side tree").resolve()


def test_staging_in_process_stages_what_git_add_stages(repo):
    """The same changes (a new executable, a symlink, a file made non-executable, a deletion,
    a new folder, an ignored file) staged by libgit2 in one tree and by `git add -A` in
    another give the same tree object."""
    import os
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    trees = []
    for ticket, lib in (("A", tb._lib), ("B", None)):
        wt = tb.ticket_worktree("t", ticket)
        (wt / "run.sh").write_text("#!/bin/sh\necho hi\n")
        os.chmod(wt / "run.sh", 0o755)
        os.symlink("app.py", wt / "link.py")
        (wt / "lib.py").unlink()
        (wt / "pkg" / "deep").mkdir(parents=True)
        (wt / "pkg" / "deep" / "m.py").write_text("M = 1\n")
        (wt / "out.log").write_text("ignored\n")
        tb._lib, tb.git.reads = lib, lib
        trees.append(tb.commit_ticket(wt, f"{ticket}\n"))
    tb._lib = tb.git.reads = LibGit.open(repo)
    a, b = (git(repo, "rev-parse", f"{sha}^{{tree}}") for sha in trees)
    assert a == b
    assert "120000" in git(repo, "ls-tree", trees[0], "link.py")           # a symlink
    assert git(repo, "ls-tree", trees[0], "run.sh").startswith("100755")   # executable


def test_switching_a_clean_tree_rewrites_what_git_checkout_would(repo, tmp_path):
    """The in-process switch looks only at the paths that differ between the tree's commit and
    the target. Checked against `git checkout` in a twin tree: additions, edits, deletions
    (an emptied directory goes), a file that becomes a directory, an executable bit, a
    symlink, and names git would read as patterns if they were not taken literally."""
    lib = LibGit.open(repo)
    old = git(repo, "rev-parse", "HEAD")
    (repo / "gone").mkdir()
    (repo / "gone" / "only.py").write_text("x\n")
    (repo / "lib.py").unlink()
    (repo / "lib.py").mkdir()                                  # a file becomes a directory
    (repo / "lib.py" / "inner.py").write_text("inner\n")
    (repo / "a[1].py").write_text("bracket\n")
    (repo / "*.txt").write_text("star\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "link").symlink_to("README.md")
    (repo / "app.py").write_text("def f():\n    return 42\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "many kinds of change")
    new = git(repo, "rev-parse", "HEAD")
    git(repo, "rm", "-q", "-r", "gone")
    git(repo, "commit", "-q", "-m", "the directory goes")
    newer = git(repo, "rev-parse", "HEAD")
    git(repo, "branch", "target", new)
    git(repo, "branch", "target2", newer)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for wt in (ours, theirs):
        git(repo, "worktree", "add", "-q", "--detach", str(wt), old)
    for target, branch in (("refs/heads/target", "b1"), ("refs/heads/target2", "b2")):
        assert lib.switch_tree(ours, branch, target)
        git(theirs, "checkout", "-q", "-f", "-b", branch + "-git", target)
        assert git(ours, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
        assert git(ours, "rev-parse", "HEAD") == git(theirs, "rev-parse", "HEAD")
        listing = {}
        for wt in (ours, theirs):
            listing[wt] = sorted(
                (str(p.relative_to(wt)), p.is_symlink(), os.access(p, os.X_OK) and p.is_file(),
                 p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
                for p in wt.rglob("*") if ".git" not in p.parts)
        assert listing[ours] == listing[theirs]
    assert not (ours / "gone").exists()
    assert lib.switch_tree(ours, None, "refs/heads/target2")   # nothing differs: just detached
    assert git(ours, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"


def _a_track_with_every_kind_of_change(repo) -> TrackBranches:
    """A track whose one commit adds, edits, deletes, renames, changes a mode, a binary and a
    file without a final newline."""
    (repo / "moved.txt").write_text("".join(f"line {i}\n" for i in range(50)))
    (repo / "gone.txt").write_text("x\n")
    (repo / "b.bin").write_bytes(b"\x00\x01bin")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "more")
    tb = TrackBranches(repo)
    tb.start_track("t1")
    wt = tb.ticket_worktree("t1", "T-1")
    (wt / "app.py").write_text("def f():\n    return 10\n\n\ndef g():\n    return 2\n")
    git(wt, "mv", "moved.txt", "renamed.txt")
    with open(wt / "renamed.txt", "a") as f:
        f.write("line 50\n")
    git(wt, "rm", "-q", "gone.txt")
    (wt / "b.bin").write_bytes(b"\x00\x02bin")
    (wt / "added.py").write_text("NEW = 1\n")
    (wt / "nonl.txt").write_text("no newline")
    os.chmod(wt / "lib.py", 0o755)
    assert tb.land_ticket("t1", "T-1", wt, "T-1: every kind of change").ok
    return tb


def test_a_tracks_diff_for_the_merge_approval_is_what_git_diff_writes(repo):
    tb = _a_track_with_every_kind_of_change(repo)
    tr, text = tb.track_diff("t1")
    gits = git(repo, "diff", f"{tr.base_sha}..{tr.head}")
    assert tb._lib is not None and tb._lib.diff(tr.base_sha, tr.head) is not None   # in-process
    # the same patch, line for line, but for the similarity percentage of the rename, which
    # libgit2 computes its own way
    strip = [ln for ln in text.splitlines() if not ln.startswith("similarity index")]
    assert strip == [ln for ln in gits.splitlines() if not ln.startswith("similarity index")]
    assert "rename from moved.txt" in text and "Binary files" in text
    assert "old mode 100644\nnew mode 100755" in text and "\\ No newline at end of file" in text
    assert tb.track_diff("t1")[1] == text


def test_a_textconv_or_a_diff_command_leaves_the_tracks_diff_to_git(repo, tmp_path):
    (repo / ".gitattributes").write_text("*.txt diff=upper\n")
    git(repo, "config", "diff.upper.textconv", "tr a-z A-Z <")
    ran = tmp_path / "external-ran"
    git(repo, "config", "diff.external", f"sh -c 'touch {ran}'")
    tb = _a_track_with_every_kind_of_change(repo)
    tr, text = tb.track_diff("t1")
    assert tb._lib is not None and tb._lib.diff(tr.base_sha, tr.head) is None
    assert "+NO NEWLINE" in text           # git's textconv applied
    assert not ran.exists()                # and the person's external diff tool never started


def test_a_work_tree_libgit2_places_elsewhere_is_listed_by_git_not_an_error(repo, tmp_path):
    """libgit2 may put a repository's work tree somewhere that does not hold the directory
    asked about (here `core.worktree` names another directory; a resumed run once met the
    same in a ticket's tree): the listing is left to git, and nothing raises."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    git(repo, "config", "core.worktree", str(elsewhere))
    lib = LibGit.open(repo)
    assert lib is not None
    assert lib.listed_files(repo) is None


def _tree_state(tree: pathlib.Path) -> dict[str, tuple]:
    """Every file and directory below ``tree`` (but .git): its kind, permission bits and
    bytes (a symlink: its target)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in dirnames + [f for f in filenames if f != ".git"]:
            p = pathlib.Path(dirpath) / name
            rel = p.relative_to(tree).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", oct(p.stat().st_mode & 0o777))
            else:
                out[rel] = ("file", oct(p.stat().st_mode & 0o777), p.read_bytes())
    return out


def _switch_like_git(repo, change, base: dict[str, str] | None = None) -> None:
    """A clean tree detached at main is switched in-process to main after ``change(repo)``
    committed there; it must equal a tree git checks out at that commit: files, modes,
    directories left or removed, the index (stat data included: `git diff-files` does not
    refresh it)."""
    for name, text in {"tools/run.sh": "#!/bin/sh\necho 1\n", "old/only.py": "O = 1\n",
                       "keep/a.py": "A = 1\n", "keep/b.py": "B = 1\n", "notes.txt": "n\n",
                       **(base or {})}.items():
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text(text)
    os.chmod(repo / "tools/run.sh", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "more files")
    mine = repo.parent / "mine"
    git(repo, "worktree", "add", "-q", "--detach", str(mine), "main")
    change(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the change")
    lib = LibGit.open(repo)
    assert lib.switch_tree(mine, None, "refs/heads/main", detached_only=True) is True
    theirs = repo.parent / "theirs"
    git(repo, "worktree", "add", "-q", "--detach", str(theirs), "main")
    assert _tree_state(mine) == _tree_state(theirs)
    assert git(mine, "ls-files", "-s") == git(theirs, "ls-files", "-s")
    assert git(mine, "rev-parse", "HEAD") == git(repo, "rev-parse", "main")
    assert git(mine, "diff-files", "--name-only") == ""       # stat data recorded
    assert git(mine, "status", "--porcelain", "--ignored") == ""


@pytest.mark.parametrize("case", ["files", "symlink", "eol attribute", "directory to file"])
def test_a_switched_tree_is_what_git_checks_out(repo, case):
    def change(r):
        (r / "app.py").write_text("def f():\n    return 10\n")          # modified
        if case == "files":
            (r / "new" / "deep").mkdir(parents=True)
            (r / "new" / "deep" / "x.py").write_text("X = 2\n")        # added, new dirs
            (r / "old" / "only.py").unlink()                           # its directory goes
            (r / "keep" / "b.py").unlink()                             # its directory stays
            os.chmod(r / "lib.py", 0o755)                              # mode only
            (r / "bin").mkdir()
            (r / "bin" / "tool").write_text("#!/bin/sh\n")
            os.chmod(r / "bin" / "tool", 0o755)                        # added executable
            (r / "tools" / "run.sh").write_text("#!/bin/sh\necho 2\n")  # stays executable
            (r / "a[1].py").write_text("weird = 1\n")                 # not a pattern
        elif case == "symlink":
            (r / "link.py").symlink_to("app.py")
        elif case == "eol attribute":
            (r / "notes.txt").write_text("n\nm\n")       # written with CRLF endings
        else:
            (r / "keep" / "a.py").unlink()
            (r / "keep" / "b.py").unlink()
            (r / "keep").rmdir()
            (r / "keep").write_text("now a file\n")
    _switch_like_git(repo, change,
                     {".gitattributes": "*.txt eol=crlf\n"} if case == "eol attribute" else None)


def test_a_switch_that_changes_gitattributes_is_left_to_git(repo):
    """libgit2 reads the attributes of the tree it is leaving: a `.gitattributes` arriving
    with the switch would not apply to the files it brings (git applies it)."""
    mine = repo.parent / "mine"
    git(repo, "worktree", "add", "-q", "--detach", str(mine), "main")
    before = git(mine, "rev-parse", "HEAD")
    (repo / ".gitattributes").write_text("*.txt eol=crlf\n")
    (repo / "notes.txt").write_text("n\nm\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "attributes")
    lib = LibGit.open(repo)
    assert lib.switch_tree(mine, None, "refs/heads/main", detached_only=True) is False
    assert git(mine, "rev-parse", "HEAD") == before and not (mine / "notes.txt").exists()
    git(mine, "checkout", "-q", "--detach", "main")          # what the caller does then
    assert (mine / "notes.txt").read_bytes() == b"n\r\nm\r\n"


def test_a_tree_whose_head_names_no_commit_is_left_to_git(repo):
    """Every file of such a tree would be new, read with no attributes yet: git checks it
    out."""
    mine = repo.parent / "mine"
    git(repo, "worktree", "add", "-q", "--detach", str(mine), "main")
    git(mine, "symbolic-ref", "HEAD", "refs/heads/unborn")
    lib = LibGit.open(repo)
    assert lib.switch_tree(mine, None, "refs/heads/main", detached_only=True) is None
    assert lib.switch_tree(mine, None, "refs/heads/main") is False
    assert git(mine, "symbolic-ref", "HEAD") == "refs/heads/unborn"


def test_a_tree_whose_registration_lost_its_path_is_never_written_through_libgit2(
        repo, tmp_path, monkeypatch):
    """A killed `git worktree move` can leave the tree's administrative `gitdir` file empty;
    libgit2 then takes the process's working directory for the tree (git still finds it by its
    `.git` file). Nothing is checked out, staged or listed there through libgit2: the person's
    files in the directory Clutch runs from stay as they are, and git does the work."""
    mine = repo.parent / "mine"
    git(repo, "worktree", "add", "-q", "--detach", str(mine), "main")
    (repo / "app.py").write_text("def f():\n    return 10\n")
    git(repo, "commit", "-qam", "landed")
    admin = pathlib.Path(git(mine, "rev-parse", "--absolute-git-dir"))
    (admin / "gitdir").write_text("")            # what the kill left
    cwd = tmp_path / "where clutch runs"
    cwd.mkdir()
    (cwd / "app.py").write_text("the person's own file\n")
    (cwd / "new.txt").write_text("theirs too\n")
    monkeypatch.chdir(cwd)
    import pygit2
    assert pathlib.Path(pygit2.Repository(str(mine)).workdir).resolve() == cwd.resolve()
    lib = LibGit.open(repo)
    assert lib.switch_tree(mine, None, "refs/heads/main", detached_only=True) is False
    assert lib.switch_tree(mine, None, "refs/heads/main") is False
    (mine / "work.py").write_text("W = 1\n")
    assert lib.stage_all(mine) is None
    assert lib.listed_files(mine) is None
    assert (cwd / "app.py").read_text() == "the person's own file\n"
    assert sorted(p.name for p in cwd.iterdir()) == ["app.py", "new.txt"]
    staged = git(mine, "ls-files", "--cached").split()
    assert "new.txt" not in staged and "work.py" not in staged      # nothing staged here
    git(mine, "checkout", "-q", "-f", "--detach", "main")  # git, by the tree's .git file
    assert (mine / "app.py").read_text() == "def f():\n    return 10\n"


@pytest.mark.parametrize("left", ["empty", "the old place"])
def test_a_registration_that_lost_its_path_is_repaired_as_the_track_starts(repo, left):
    """The kill left the administrative `gitdir` of a ticket's tree and of a pooled one
    empty, or naming where a `git worktree move` took them from: the track's next start
    points them back, so `git worktree list` does not call them prunable (a prune would drop
    a live tree's registration) and libgit2 finds the tree where it is."""
    tb, _ = TrackBranches.detect(repo)
    tb.start_track("t")
    a = tb.ticket_worktree("t", "A")
    tb.prewarm("t", 1)
    [pooled] = list((a.parent / "_pool").iterdir())
    for tree in (a, pooled):
        admin = pathlib.Path(git(tree, "rev-parse", "--absolute-git-dir"))
        (admin / "gitdir").write_text("" if left == "empty" else f"{repo}/gone/.git\n")
    def listed() -> tuple[set[str], bool]:
        out = git(repo, "worktree", "list", "--porcelain")
        return ({ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("worktree ")},
                "prunable" in out)
    paths, prunable = listed()
    assert prunable or not {str(a), str(pooled)} <= paths    # git has lost them
    tb.start_track("t")                                  # the resumed run's start
    paths, prunable = listed()
    assert {str(a), str(pooled)} <= paths and not prunable
    lib = LibGit.open(repo)
    for tree in (a, pooled):
        assert lib._tree_repo(tree) is not None
    tb.cleanup_track("t", keep_branch=False, discard=True)
    assert worktree_paths(repo) == [str(repo)]
