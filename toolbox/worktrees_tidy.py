"""Seeing, undoing and tidying away one ticket's or one track's work (the half of
:class:`toolbox.worktrees.TrackBranches` that runs after a ticket is merged or dropped).

A mixin of TrackBranches: it uses the instance's runner (``git``), lock (``_lock``: every
branch move), worktree directories (``_need()``), track records (``_records``) and pool
paths (``_pool``). Threads: as TrackBranches (the engine's executor and tidy threads). State:
none of its own.
"""
from __future__ import annotations

import pathlib

from toolbox.worktrees_dirs import revert_in_scratch
from toolbox.worktrees_pool import making_dir
from toolbox.worktrees_merge import (advance_branch, diff_between, drop_merged_refs,
                                     ticket_merged)
from toolbox.worktrees_model import (CONFLICT_SUFFIX, MergeResult, TrackBranch, WorktreeError,
                                     WorktreeInfo, check_id, merged_ref, repair_branch,
                                     ticket_branch, track_branch)


class TicketTidy:
    """Mixin of TrackBranches: per-ticket diff and revert, and removing trees and branches."""

    # -- see and undo one ticket ---------------------------------------------------------------

    def ticket_diff(self, track_id: str, ticket_id: str) -> tuple[list[str], str]:
        """(files changed, unified diff) of one ticket: its merged commit against the track
        before it, or, before the merge, its branch against where it forked."""
        self._need()
        merged = self.git.rev(merged_ref(check_id(track_id, "track id"),
                                         check_id(ticket_id, "ticket id")))
        if merged is not None:
            a, b = f"{merged}^1", merged
        else:
            tip = self._tip(ticket_branch(track_id, ticket_id), f"ticket {ticket_id}'s")
            a = self.git.out("merge-base", self._tip(track_branch(track_id), "track"), tip)
            b = tip
        return diff_between(self.git, a, b)

    def track_diff(self, track_id: str) -> tuple[TrackBranch, str]:
        """The started track and what merging it would bring: ``git diff base..head`` (the
        merge approval's), in-process where libgit2 writes what git would (``_lib.diff``);
        "" when no ticket committed anything or the track has no branch to merge into."""
        tr = self.track(track_id)
        if tr.head == tr.base_sha or not tr.base:
            return tr, ""
        text = self._lib.diff(tr.base_sha, tr.head) if self._lib is not None else None
        if text is None:        # a filter, textconv or diff command: git's own words
            text = self.git.out("diff", "--no-color", "--no-ext-diff",
                                f"{tr.base_sha}..{tr.head}")
        return tr, text.strip()

    def landed(self, track_id: str, ticket_id: str) -> str | None:
        """The commit by which the ticket landed on the track branch (its marker, written in
        the same ref transaction as the landing), when it is still on that branch; else None.
        A run killed after the landing and before its state was saved left such a ticket
        recorded as unfinished: it must be counted, not done again on top of itself."""
        self._need()
        done = self.git.rev(merged_ref(check_id(track_id, "track id"),
                                       check_id(ticket_id, "ticket id")))
        if done is None:       # the common case, asked as every ticket starts: one read
            return None
        tip = self.git.rev(f"refs/heads/{track_branch(track_id)}")
        return done if tip is not None and self.git.is_ancestor(done, tip) else None

    def revert_ticket(self, track_id: str, sha: str, on: str | None = None) -> str:
        """Revert commit ``sha`` on the track branch (or on branch ``on``, e.g. the user's after
        the track merged); the new commit's SHA. A conflict: WorktreeError naming the files,
        nothing changed. The user's checked-out tree only ever fast-forwards."""
        dirs = self._need()
        target = on or track_branch(check_id(track_id, "track id"))
        commit = self.git.rev(sha) if isinstance(sha, str) and sha.strip() else None
        if commit is None:
            raise WorktreeError(f"revert: {sha!r} names no commit")
        with self._lock:
            tip = self._tip(target, "the")
            if not self.git.is_ancestor(commit, tip):
                raise WorktreeError(f"revert: {commit[:12]} is not on {target}")
            new = revert_in_scratch(self.git, dirs, tip, commit, target)
            refused = advance_branch(self.git, target, new, tip, f"the revert of {commit[:12]}")
            if refused is not None:
                raise WorktreeError(refused.message)
            return new

    def forget_merge(self, track_id: str, ticket_id: str) -> None:
        """A reverted ticket's next run merges afresh (not "already merged")."""
        with self._lock:
            drop_merged_refs(self._need() and self.git, check_id(track_id, "track id"),
                             check_id(ticket_id, "ticket id"))

    # -- clean up ------------------------------------------------------------------------------

    def cleanup_ticket(self, track_id: str, ticket_id: str, keep_branch: bool = False,
                       discard: bool = False, recycle: bool = False) -> None:
        """Remove the ticket's worktrees (its own and a conflict one) and, unless
        ``keep_branch``, its branches. Uncommitted changes or an unmerged branch are refused
        unless ``discard`` (the person dropped the ticket). With ``recycle`` (while the track has
        tickets to come) a clean worktree goes to the track's pool instead, so the next
        ticket's set-up checks out only what differs; ``cleanup_track`` empties the pool."""
        dirs = self._need()
        path = self.worktree_path(track_id, ticket_id)
        conflict = path.with_name(ticket_id + CONFLICT_SUFFIX)
        if not discard and not keep_branch and not ticket_merged(self.git, track_id, ticket_id):
            raise WorktreeError(f"ticket {ticket_id}'s branch {ticket_branch(track_id, ticket_id)} "
                                f"is not merged into {track_branch(track_id)}; merge it, keep "
                                f"the branch, or pass discard=True to drop its change")
        if not discard:
            for p in (path, conflict):
                registered = (p / ".git").is_file() and dirs.find(p) is not None
                changed = dirs.dirty(p) if registered else []
                if changed:
                    raise WorktreeError(f"the worktree {p} has uncommitted changes "
                                        f"({', '.join(changed[:5])}); commit them or pass "
                                        f"discard=True")
        # a tree that is not there costs no git process (a registration left by a deleted
        # directory goes with the track's `git worktree prune`); one that is was checked just
        # above, so `remove` need not read its status again (a `git status` of every file costs
        # as much as the removal itself on a big tree)
        if path.exists() and not (recycle and dirs.recycle(path, self._pool(track_id),
                                                           self._lib)):
            dirs.remove(path, discard=True)
        if conflict.exists():
            dirs.remove(conflict, discard=True)  # a conflict tree's state lives on in its branch
        if not keep_branch:
            self._delete_ticket_branches(track_id, ticket_id)

    def _delete_ticket_branches(self, track_id: str, ticket_id: str) -> None:
        """The ticket's branch and its repair branch, those that exist, deleted (in-process
        when libgit2 can, else ``git branch -D``)."""
        names = [ticket_branch(track_id, ticket_id), repair_branch(track_id, ticket_id)]
        with self._lock:
            if self._lib is None or not self._lib.delete_branches(names):
                for name in names:
                    self._need().delete_branch(name)

    def settle_landed(self, worktree, res: MergeResult) -> bool:
        """A tree whose change landed straight from its index (``res.settle``) put on the
        commit that landed it, as a committed ticket's tree would be: its branch there, index
        and files as that commit (the paths the track gained meanwhile written). False when
        that could not be done: the tree then holds the change uncommitted (it is on the
        track), and tidying removes it instead of pooling it."""
        if not res.settle or res.sha is None or self._lib is None:
            return False
        wt = pathlib.Path(worktree)
        if not self._need().holds(wt):
            raise WorktreeError(f"{str(wt)!r} is not one of Clutch's ticket worktrees")
        return self._lib.settle(wt, res.sha)

    def release_ticket(self, track_id: str, ticket_id: str) -> None:
        """A landed ticket's branches deleted and its tree detached from them, the tree itself
        left as it is for `cleanup_track` to remove with the others (the track has no ticket
        left that would take it from the pool: pooling it would cost a `git status`, a move
        and, for a tree landed straight from its index, a reset, all for nothing)."""
        dirs = self._need()
        path = self.worktree_path(check_id(track_id, "track id"), check_id(ticket_id, "ticket id"))
        if path.exists() and dirs.holds(path) and \
                not (self._lib is not None and self._lib.detach(path)):
            self.git.run("switch", "-q", "--detach", cwd=path)     # its changes go with it
        self._delete_ticket_branches(track_id, ticket_id)

    def cleanup_track(self, track_id: str, keep_branch: bool = False,
                      discard: bool = False) -> None:
        """Clean up every ticket of the track, then the track branch unless ``keep_branch``
        (refused while it is not merged, unless ``discard``)."""
        dirs = self._need()
        check_id(track_id, "track id")
        tickets = set()
        for ns in ("clutch-ticket", "clutch-repair"):
            refs = self.git.out("for-each-ref", "--format=%(refname)", f"refs/heads/{ns}/{track_id}/")
            tickets |= {r.rsplit("/", 1)[1] for r in refs.split()}
        track_dir = dirs.base_dir / track_id
        if track_dir.is_dir():
            tickets |= {p.name.removesuffix(CONFLICT_SUFFIX) for p in track_dir.iterdir()
                        if not p.name.startswith("_")}    # _pool, _making: no ticket's
        branch = track_branch(track_id)
        tip = self.git.rev(f"refs/heads/{branch}")
        if not keep_branch and not discard and tip is not None:
            rec = self._records.read(track_id) or {}
            into = rec.get("merged_into")
            into_tip = self.git.rev(f"refs/heads/{into}") if into else None
            if into_tip is None or not self.git.is_ancestor(tip, into_tip):
                raise WorktreeError(f"{branch} is not merged into the user's branch; merge it "
                                    f"(merge_track), keep it (keep_branch=True) or pass "
                                    f"discard=True to drop it")
        for ticket_id in sorted(tickets):
            self.cleanup_ticket(track_id, ticket_id, keep_branch=keep_branch, discard=discard,
                                recycle=False)
        dirs.drain_pool(self._pool(track_id))
        if not keep_branch:
            with self._lock:
                dirs.delete_branch(branch)
                self._records.path(track_id).unlink(missing_ok=True)
                drop_merged_refs(self.git, track_id)
        dirs.prune()

    def drop_half_made(self) -> list[pathlib.Path]:
        """The trees a killed run was still making, removed (see WorktreeDirs)."""
        return self._need().drop_half_made()

    def has_trees(self, track_id: str) -> bool:
        """Whether anything of the track is under Clutch's worktree directory (its tickets'
        trees, its pool, a tree being made); no git process."""
        return (self._need().base_dir / check_id(track_id, "track id")).is_dir()

    def list_worktrees(self) -> list[WorktreeInfo]:
        """Every worktree git knows of (the main one first)."""
        self._need()
        return self.git.worktrees()


def drain_pool(tb, track_id: str) -> None:
    """Remove the track's pooled (prepared, unused) worktrees, and any a killed run left
    half-made: nothing of a ticket is in them. No git process when it has none."""
    pool = tb._pool(check_id(track_id, "track id"))
    if not (pool.is_dir() or making_dir(pool).is_dir()):
        return
    tb._need().drain_pool(pool)
    tb._need().prune()
