"""One worktree per ticket, merged into its track branch in DAG order (issue 17, git layer).

A track works on ``clutch/<track_id>``, started at the commit checked out when the track
starts. Each ticket gets a worktree at ``<repo>/.clutch/worktrees/<track_id>/<ticket_id>`` on
``clutch-ticket/<track_id>/<ticket_id>``, made from the track branch as it stands. A finished
ticket is committed there and merged into the track branch without any checkout of the user's
tree: a fast-forward when the ticket has one commit on the current track tip, else one commit
rebased onto it (in-process through libgit2 when that is exactly what git would do, see
worktrees_libgit.py; else ``git merge-tree --write-tree`` + ``commit-tree`` + one atomic
``update-ref``); a conflict leaves the track branch untouched and names both sides. A ticket
that waits for others may have its tree prepared while they work (``prepare_worktree``). A finished track
reaches the user's branch only through ``merge_track``, where git itself refuses to overwrite
uncommitted changes. Outside git, ``TrackBranches.detect`` says why and callers keep sharing
the directory.

Threads: the engine's executor threads, several tickets at once. Worktree creation runs in
parallel (git locks its own metadata); everything that moves a branch is serialised by the
instance's lock and also checked by compare-and-swap, so another process moving a branch
fails the operation instead of losing a commit. State: the lock, the repository's paths, and
one small JSON record per track (``.clutch/worktrees/<track_id>.track.json``: the base branch
and commit, and where it merged), written atomically.
"""
from __future__ import annotations

import logging
import pathlib
import shutil
import threading
from typing import Any

from toolbox.worktrees_dirs import TrackRecords, WorktreeDirs
from toolbox.worktrees_merge import (advance_branch, commit_tree, conflict_result,
                                     merge_tree, message_of, tree_of, update_refs)
from toolbox.worktrees_conflict import ConflictTrees
from toolbox.worktrees_libgit import LibGit
from toolbox.worktrees_tidy import TicketTidy, drain_pool
from toolbox.worktrees_model import (POOL_DIR, ConflictSide, GitRunner, MergeResult,
                                     TrackBranch, WorktreeError, WorktreeInfo, check_count,
                                     check_id, merged_ref, said, ticket_branch, track_branch)

__all__ = ("TrackBranches", "TrackBranch", "MergeResult", "ConflictSide", "WorktreeInfo",
           "WorktreeError", "drain_pool")

log = logging.getLogger(__name__)


class TrackBranches(TicketTidy, ConflictTrees):
    """Track branches and ticket worktrees of the git repository holding ``root``. Construct
    with :meth:`detect` (or directly: then ``is_git``/``reason`` tell, and every operation on
    a non-repository raises WorktreeError with that reason)."""

    def __init__(self, root):
        self.root = pathlib.Path(root).resolve()
        self.reason = ""
        self.top: pathlib.Path | None = None
        self.prefix = ""
        self._lock = threading.Lock()
        self._dirs: WorktreeDirs | None = None
        self._lib: LibGit | None = None
        self.git = GitRunner(self.root)
        if shutil.which("git") is None:
            self.reason = "git is not installed (not found on PATH)"
            return
        if not self.root.is_dir():
            self.reason = f"{str(self.root)!r} is not a directory"
            return
        proc = self.git.run("rev-parse", "--show-toplevel", "--show-prefix", "--git-common-dir",
                            check=False)
        if proc.returncode != 0:
            self.reason = (f"{str(self.root)!r} is not inside a git work tree, so parallel "
                           f"tickets share one directory and can see each other's changes "
                           f"(run `git init` and commit to give each ticket its own worktree)")
            return
        top, prefix, common = proc.stdout.decode("utf-8", "surrogateescape").split("\n")[:3]
        self.top = pathlib.Path(top)
        self.prefix = prefix
        common_dir = pathlib.Path(common)
        if not common_dir.is_absolute():
            common_dir = (self.root / common_dir).resolve()
        self._lib = LibGit.open(self.top, moves=self._lock)
        self.git = GitRunner(self.top, reads=self._lib)
        self._dirs = WorktreeDirs(self.git, self.top, common_dir)
        self._records = TrackRecords(self._dirs.base_dir)
        if self.git.rev("HEAD") is None:
            self.reason = (f"the git repository at {str(self.top)!r} has no commits yet, so there "
                           f"is nothing to branch a track from; make a first commit (for example "
                           f"`git commit --allow-empty -m init`) to give each ticket its own "
                           f"worktree. Until then tickets share the directory")

    @classmethod
    def detect(cls, root) -> tuple["TrackBranches | None", str]:
        """(instance, "") for a git repository with at least one commit; else (None, why)."""
        tb = cls(root)
        return (tb, "") if tb.is_git else (None, tb.reason)

    @property
    def is_git(self) -> bool:
        return self.reason == ""

    def __repr__(self) -> str:
        return f"TrackBranches({str(self.root)!r})"

    def _need(self) -> WorktreeDirs:
        if not self.is_git or self._dirs is None:
            raise WorktreeError(self.reason)
        return self._dirs

    # -- paths and records ---------------------------------------------------------------------

    def worktree_path(self, track_id: str, ticket_id: str) -> pathlib.Path:
        return self._need().base_dir / check_id(track_id, "track id") / check_id(ticket_id,
                                                                                   "ticket id")

    def workspace_path(self, worktree: pathlib.Path) -> pathlib.Path:
        """The directory a worker works in: the worktree, or the same sub-directory of it as
        ``root`` is of the repository."""
        return pathlib.Path(worktree) / self.prefix if self.prefix else pathlib.Path(worktree)

    def lister(self):
        """For a worktree's repository map: lists a tree's files in-process (as ``git
        ls-files`` would), or None when there is no libgit2 here."""
        return self._lib.listed_files if self._lib is not None else None

    def tree_head(self, worktree) -> str | None:
        """The commit the worktree's HEAD names (None when it names none)."""
        return self.git.rev("HEAD", cwd=pathlib.Path(worktree))

    def changed_since(self, worktree, commit: str) -> tuple[str, list[str]] | None:
        """(the worktree's HEAD commit, the paths whose entries differ between ``commit`` and
        it, relative to the worker's directory in it: see ``workspace_path``); None when
        that cannot be told without git processes (no libgit2 here). Commits only: what the
        tree's files hold beyond its HEAD is not looked at."""
        got = self._lib.changed_since(pathlib.Path(worktree), commit) \
            if self._lib is not None else None
        return None if got is None else (got[0], self._in_workspace(got[1]))

    def _in_workspace(self, paths: list[str]) -> list[str]:
        """Paths relative to the repository's top as paths relative to the worker's
        directory (see ``workspace_path``); those outside it left out."""
        if not self.prefix:
            return paths
        return [p[len(self.prefix):] for p in paths if p.startswith(self.prefix)]

    def sandbox_hide(self) -> list[pathlib.Path]:
        """What a worker's command sandbox must hide (``Workspace(sandbox_hide=...)``): the
        repository's ``.clutch/``, which holds every other ticket's worktree."""
        return [self._need().top.joinpath(".clutch")]

    def _tip(self, branch: str, what: str) -> str:
        sha = self.git.rev(f"refs/heads/{branch}")
        if sha is None:
            raise WorktreeError(f"{what} branch {branch} does not exist")
        return sha

    # -- a track -------------------------------------------------------------------------------

    def start_track(self, track_id: str) -> TrackBranch:
        """``clutch/<track_id>`` at the commit checked out now; the same track on resume."""
        dirs = self._need()
        check_id(track_id, "track id")
        dirs.ensure_excluded()
        for stale in dirs.clear_stale_locks(track_id):
            log.warning(f"removed {stale}, a lock a killed run left behind")
        for tree in dirs.repair_links(track_id):
            log.warning(f"{tree}'s registration had lost its path (a run killed while "
                        f"moving it); repaired")
        branch = track_branch(track_id)
        with self._lock:
            rec = self._records.read(track_id)
            tip = self.git.rev(f"refs/heads/{branch}")
            if tip is not None and rec is not None:
                return TrackBranch(track_id, branch, rec.get("base"), rec["base_sha"], tip)
            head = self.git.rev("HEAD", cwd=self.root)
            if head is None:
                raise WorktreeError(f"HEAD of {self.root} names no commit")
            base = self._lib.head_branch(self.root) if self._lib is not None else NotImplemented
            if base is NotImplemented:
                sym = self.git.run("symbolic-ref", "-q", "--short", "HEAD", cwd=self.root,
                                   check=False)
                base = sym.stdout.decode().strip() or None if sym.returncode == 0 else None
            if tip is None:
                if self._lib is None or not self._lib.create_branch(branch, head):
                    update_refs(self.git, [(f"refs/heads/{branch}", head, "0" * len(head))])
                tip, base_sha = head, head
            else:  # the branch survived but its record did not: the fork point is the base
                base_sha = self.git.out("merge-base", head, tip)
            self._records.write(track_id, {"track_id": track_id, "base": base,
                                          "base_sha": base_sha, "merged_into": None})
            return TrackBranch(track_id, branch, base, base_sha, tip)

    def track(self, track_id: str) -> TrackBranch:
        """The started track (WorktreeError when it was not started)."""
        self._need()
        rec = self._records.read(check_id(track_id, "track id"))
        branch = track_branch(track_id)
        tip = self.git.rev(f"refs/heads/{branch}")
        if rec is None or tip is None:
            raise WorktreeError(f"track {track_id} has not been started (call start_track)")
        return TrackBranch(track_id, branch, rec.get("base"), rec["base_sha"], tip)

    # -- a ticket's worktree -------------------------------------------------------------------

    def ticket_worktree(self, track_id: str, ticket_id: str,
                        switched: list | None = None) -> pathlib.Path:
        """The ticket's worktree, made from the track branch as it stands now: a tree
        prepared for it (``prepare_worktree``) brought forward to the track tip, else a pooled
        tree, else a new one; an existing healthy one is reused (resume), a broken one made
        again (its branch kept). ``switched``: a prepared tree brought forward in-process
        appends (the commit it was at, the paths that differ, relative to the worker's
        directory: see ``workspace_path``) to it."""
        dirs = self._need()
        path = self.worktree_path(track_id, ticket_id)
        tb, kb = track_branch(track_id), ticket_branch(track_id, ticket_id)
        tip = f"refs/heads/{tb}"
        if path.exists() and dirs.half_made(path):
            # a run killed while writing this tree's files (a tree prepared for the ticket,
            # or its own): no worker has had it, and reused, its missing files would be
            # committed as deletions. Made again from the start.
            log.warning(f"{path} was left half-written by a run that stopped; making it again")
            dirs.remove(path, discard=True)
        if path.exists():
            report: list = []
            if (path / ".git").is_file() and dirs.switch_prepared(path, kb, tip, self._lib,
                                                                  report):
                if switched is not None:
                    switched += [(at, self._in_workspace(paths)) for at, paths in report]
                return path
        elif dirs.claim(self._pool(track_id), path, kb, tip, lib=self._lib):
            return path
        self._tip(tb, f"track {track_id}'s")
        dirs.ensure_excluded()
        if not path.exists() and self.git.rev(tip) is not None and \
                self.git.rev(f"refs/heads/{kb}") is None:    # a new ticket, no tree to take
            path.parent.mkdir(parents=True, exist_ok=True)
            dirs.fresh(path, "-b", kb, tip)
            return path
        return dirs.add(path, kb, tb, pool=self._pool(track_id))

    def prepare_worktree(self, track_id: str, ticket_id: str) -> pathlib.Path | None:
        """A tree for a ticket that starts once the tickets it waits for have landed, made
        while they work: at the ticket's path, detached at the track tip as it stands (a
        pooled tree when there is one, else a new one). ``ticket_worktree`` then only brings
        it forward (the files those tickets changed) and puts it on the ticket's branch. None
        when the ticket has a tree already."""
        dirs = self._need()
        path = self.worktree_path(track_id, ticket_id)
        tb = track_branch(track_id)
        if path.exists():
            return None
        self._tip(tb, f"track {track_id}'s")
        dirs.ensure_excluded()
        if dirs.claim(self._pool(track_id), path, None, f"refs/heads/{tb}", lib=self._lib):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        dirs.fresh(path, "--detach", f"refs/heads/{tb}", urgent=False)
        return path

    def prewarm(self, track_id: str, count: int = 1) -> int:
        """Fill the track's pool with up to ``count`` worktrees detached at the track tip (at
        HEAD before the track starts), so set-up checks out only what differs; off the
        critical path (while the person reads the plan). How many the pool holds."""
        dirs, count = self._need(), check_count(count)
        tip = self.git.rev(f"refs/heads/{track_branch(check_id(track_id, 'track id'))}") or \
            self.git.out("rev-parse", "HEAD", cwd=self.root)
        dirs.ensure_excluded()
        return dirs.fill_pool(self._pool(track_id), tip, count)

    def _pool(self, track_id: str) -> pathlib.Path:
        return self._need().base_dir / track_id / POOL_DIR

    def commit_ticket(self, worktree, message: str) -> str | None:
        """Commit everything changed in ``worktree`` (``git add -A``: .gitignore respected) as
        Clutch; the commit's SHA, or None when nothing changed."""
        wt, staged = self._staged(worktree, message)
        done = self._lib.commit_index(wt, message, staged=staged) \
            if self._lib is not None else None
        if isinstance(done, str):
            return done or None
        return self._git_commit(wt, message)

    def land_ticket(self, track_id: str, ticket_id: str, worktree, message: str,
                    settle: bool = True) -> MergeResult | None:
        """Commit the ticket's worktree and merge it into the track branch: what a finished
        ticket does before its dependents may start, so it is the fast path. Where libgit2
        writes what git would and the track moved only by changes to other paths, the staged
        index lands straight on the track (one commit on its tip, the track and the merged
        marker moved in one transaction; no index file, no commit on the ticket's branch);
        the tree is then put on that commit (`settle_landed`) here, or, with ``settle``
        False, by the caller off the critical path (the result says ``settle``). Otherwise
        the ticket's commit is made on its branch and rebased or merged. None when nothing
        changed."""
        wt, staged = self._staged(worktree, message, write=False)
        tb = f"refs/heads/{track_branch(check_id(track_id, 'track id'))}"
        marker = merged_ref(track_id, check_id(ticket_id, "ticket id"))
        if staged is not None:        # objects unlocked; the refs' move takes the lock
            direct = self._lib.land_staged(staged, message, tb, marker)
            if direct == "":
                return self._land_own_commits(track_id, ticket_id)
            if isinstance(direct, MergeResult):
                if settle:
                    self.settle_landed(wt, direct)
                return direct
            if not self._lib.write_index(staged):     # the git command and the commit read
                self.git.run("add", "-A", cwd=wt)       # the index file: staged there by git
                staged = None
        done = self._lib.commit_index(wt, message, land=(tb, marker), staged=staged) \
            if self._lib is not None else None
        if isinstance(done, MergeResult):
            return done
        if done is None:              # not for libgit2 here: git commits
            done = self._git_commit(wt, message)
        if not done:                  # nothing staged: what the worker committed, if anything
            return self._land_own_commits(track_id, ticket_id)
        return self.merge_ticket(track_id, ticket_id)

    def _land_own_commits(self, track_id: str, ticket_id: str) -> MergeResult | None:
        """Nothing uncommitted in the ticket's tree: what the worker committed itself (a
        ``git commit`` in its tree), if anything the track lacks, is merged as any ticket's
        commit is; None when the ticket changed nothing."""
        tip = self.git.rev(f"refs/heads/{ticket_branch(track_id, ticket_id)}")
        track = self.git.rev(f"refs/heads/{track_branch(track_id)}")
        if tip is None or track is None or self.git.is_ancestor(tip, track):
            return None
        return self.merge_ticket(track_id, ticket_id)

    def _staged(self, worktree, message: str, write: bool = True) -> tuple[pathlib.Path, Any]:
        """Everything changed in one of Clutch's worktrees staged: in-process where the
        repository has no filter driver, else ``git add -A`` (clean filters such as LFS).
        (The worktree, the pygit2 Repository that staged it or None.) ``write`` False: an
        in-process staging is not written to the index file (the caller does, if needed)."""
        dirs = self._need()
        wt = pathlib.Path(worktree)
        if not isinstance(message, str) or not message.strip():
            raise WorktreeError("commit_ticket: the commit message is empty")
        if not dirs.holds(wt):
            raise WorktreeError(f"{str(wt)!r} is not one of Clutch's ticket worktrees")
        staged = self._lib.stage_all(wt, write=write) if self._lib is not None else None
        if staged is None:
            self.git.run("add", "-A", cwd=wt)
        return wt, staged

    def _git_commit(self, wt: pathlib.Path, message: str) -> str | None:
        """``git commit`` of the staged index; its SHA, None when nothing was staged (git's
        "nothing to commit" is confirmed before it is believed)."""
        made = self.git.run("commit", "-q", "--no-verify", "-F", "-", cwd=wt, identity=True,
                            input=message.encode("utf-8"), check=False)
        if made.returncode == 0:
            return self.git.out("rev-parse", "HEAD", cwd=wt)
        staged = self.git.run("diff", "--cached", "--quiet", cwd=wt, check=False)
        if staged.returncode == 0:
            return None
        raise WorktreeError(f"git commit failed in {wt}: {said(made)}")

    # -- merging a ticket into its track -------------------------------------------------------

    def merge_ticket(self, track_id: str, ticket_id: str) -> MergeResult:
        """Merge the ticket's branch into the track branch (no checkout anywhere)."""
        self._need()
        tb = track_branch(check_id(track_id, "track id"))
        kb = ticket_branch(track_id, check_id(ticket_id, "ticket id"))
        if self._lib is not None:    # the lock only around the refs' compare-and-swap
            done = self._lib.land(f"refs/heads/{tb}", f"refs/heads/{kb}",
                                  merged_ref(track_id, ticket_id))
            if done is not None:
                return done
        with self._lock:
            # one process reads both tips and the ticket's parents: a single commit on the
            # track tip is fast-forwarded by a compare-and-swap, without further reading
            tips = self.git.run("rev-parse", f"refs/heads/{tb}", f"refs/heads/{kb}",
                                f"refs/heads/{kb}^@", "--", check=False)
            if tips.returncode == 0:
                track_tip, ticket_tip, *parents = tips.stdout.decode().split()[:-1]  # no "--"
                if parents == [track_tip]:
                    update_refs(self.git, [(f"refs/heads/{tb}", ticket_tip, track_tip),
                                           (merged_ref(track_id, ticket_id), ticket_tip, None)])
                    return MergeResult(sha=ticket_tip, how="fast-forward", merged_into=tb)
            return self._merge_slowly(track_id, ticket_id, tb, kb)

    def _merge_slowly(self, track_id: str, ticket_id: str, tb: str, kb: str) -> MergeResult:
        """merge_ticket when the ticket is not one commit on the track tip (caller holds the
        lock): already merged, nothing to merge, or a rebase onto the track (a conflict
        leaves the track untouched)."""
        track_tip = self._tip(tb, f"track {track_id}'s")
        ticket_tip = self._tip(kb, f"ticket {ticket_id}'s")
        done = self.git.rev(merged_ref(track_id, ticket_id))
        if done and self.git.is_ancestor(done, track_tip):
            return MergeResult(sha=done, how="already merged", merged_into=tb)
        fork = self.git.out("merge-base", track_tip, ticket_tip)
        if fork == ticket_tip:
            return MergeResult(sha=None, how="nothing to merge", merged_into=tb,
                               message=f"{kb} has no commit that {tb} lacks")
        tree, conflicts = merge_tree(self.git, track_tip, ticket_tip)
        if conflicts:
            return conflict_result(self.git, conflicts, kb, tb)
        if tree == tree_of(self.git, track_tip):
            return MergeResult(sha=None, how="nothing to merge", merged_into=tb,
                               message=f"{tb} already holds every change of {kb}")
        new = commit_tree(self.git, tree, [track_tip], message_of(self.git, fork, ticket_tip),
                          author_of=ticket_tip)
        update_refs(self.git, [(f"refs/heads/{tb}", new, track_tip),
                               (merged_ref(track_id, ticket_id), new, None)])
        return MergeResult(sha=new, how="rebase", merged_into=tb)

    # -- a track into the user's branch --------------------------------------------------------

    def merge_track(self, track_id: str, into: str | None = None) -> MergeResult:
        """Merge ``clutch/<track_id>`` into ``into`` (default: the branch checked out when the
        track started). A branch checked out with uncommitted changes the merge would
        overwrite: refused, nothing changed, the track branch kept."""
        tr = self.track(track_id)
        target = into or tr.base
        if not target:
            raise WorktreeError(f"track {track_id} started on a detached HEAD ({tr.base_sha[:12]}), "
                                f"so there is no branch to merge it into; name one with into=")
        with self._lock:
            tgt_tip = self._tip(target, "the target")
            if self.git.is_ancestor(tr.head, tgt_tip):
                result = MergeResult(sha=tgt_tip, how="up-to-date", merged_into=target)
            else:
                if self.git.is_ancestor(tgt_tip, tr.head):
                    new, how = tr.head, "fast-forward"
                else:
                    tree, conflicts = merge_tree(self.git, tgt_tip, tr.head)
                    if conflicts:
                        return conflict_result(self.git, conflicts, tr.branch, target)
                    new, how = commit_tree(self.git, tree, [tgt_tip, tr.head],
                                           f"Merge {tr.branch} (track {track_id}) into "
                                           f"{target}\n"), "merge"
                refused = advance_branch(self.git, target, new, tgt_tip, tr.branch)
                if refused is not None:
                    return refused
                result = MergeResult(sha=new, how=how, merged_into=target)
            rec = self._records.read(track_id) or {}
            rec["merged_into"] = target
            self._records.write(track_id, rec)
            return result
