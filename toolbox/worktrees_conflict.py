"""A ticket whose merge into its track conflicts: a worktree holding the conflicted merge, for
a repair worker or the person, and its resolution merged onto the track branch (issue 17).
A mixin of TrackBranches (worktrees.py), which owns the paths, the lock that serialises
branch moves, and the git runner these use.

Threads: the ticket's executor thread. State: none of its own.
"""
from __future__ import annotations

import pathlib

from toolbox.worktrees_merge import (commit_tree, conflict_result, files_with_markers,
                                     merge_tree, update_refs)
from toolbox.worktrees_model import (CONFLICT_SUFFIX, MergeResult, WorktreeError, merged_ref,
                                     repair_branch, said, ticket_branch, track_branch)


class ConflictTrees:
    """Mixin of TrackBranches: the conflict's worktree and its resolution."""

    def conflict_worktree(self, track_id: str, ticket_id: str) -> pathlib.Path:
        """A fresh worktree on ``clutch-repair/<track>/<ticket>`` holding the conflicted merge
        of the ticket into the track (markers in the files), for a repair worker or the
        person; the same one again on resume while its merge is still in progress."""
        dirs = self._need()
        path = self.worktree_path(track_id, ticket_id).with_name(ticket_id + CONFLICT_SUFFIX)
        rb, kb = repair_branch(track_id, ticket_id), ticket_branch(track_id, ticket_id)
        self._tip(kb, f"ticket {ticket_id}'s")
        if dirs.healthy(path, rb) and self.git.rev("MERGE_HEAD", cwd=path):
            return path
        dirs.remove(path, discard=False, keep_files=True)
        with self._lock:
            dirs.delete_branch(rb)
        dirs.ensure_excluded()
        dirs.add(path, rb, track_branch(track_id))
        proc = self.git.run("merge", "--no-ff", "--no-commit", kb, cwd=path, check=False,
                            identity=True)
        if proc.returncode not in (0, 1) or self.git.rev("MERGE_HEAD", cwd=path) is None:
            raise WorktreeError(f"could not start the merge of {kb} in {path}: {said(proc)}")
        return path

    def finish_conflict(self, track_id: str, ticket_id: str,
                        message: str | None = None) -> MergeResult:
        """Commit the resolution in the conflict worktree and merge it onto the track branch.
        Conflict markers left in any changed file: a conflict result naming them, nothing
        committed (the worktree stays for another try)."""
        self._need()
        path = self.worktree_path(track_id, ticket_id).with_name(ticket_id + CONFLICT_SUFFIX)
        if not (path / ".git").is_file() or self.git.rev("MERGE_HEAD", cwd=path) is None:
            raise WorktreeError(f"no conflicted merge of ticket {ticket_id} is in progress "
                                f"(call conflict_worktree first)")
        self.git.run("add", "-A", cwd=path)
        changed = [p for p in self.git.run("diff", "--cached", "--name-only", "-z", "HEAD",
                                           cwd=path).stdout.decode("utf-8", "surrogateescape")
                   .split("\0") if p]
        marked = files_with_markers(path, changed)
        if marked:
            return MergeResult(sha=None, how="conflict", conflict=True, paths=tuple(marked),
                               message=f"conflict markers remain in {', '.join(marked)}; "
                                       f"nothing was committed")
        msg = message or (f"Merge ticket {ticket_id} into {track_branch(track_id)} "
                          f"(conflict resolved)\n")
        self.git.run("commit", "-q", "--no-verify", "-F", "-", cwd=path, identity=True,
                     input=msg.encode("utf-8"))
        resolved = self.git.out("rev-parse", "HEAD", cwd=path)
        tb = track_branch(track_id)
        with self._lock:
            track_tip = self._tip(tb, f"track {track_id}'s")
            new = resolved
            if self.git.out("rev-parse", f"{resolved}^1") != track_tip:  # the track moved on
                tree, conflicts = merge_tree(self.git, track_tip, resolved)
                if conflicts:
                    return conflict_result(self.git, conflicts, repair_branch(track_id,
                                                                              ticket_id), tb)
                new = commit_tree(self.git, tree, [track_tip, resolved], msg)
            update_refs(self.git, [(f"refs/heads/{tb}", new, track_tip),
                                   (merged_ref(track_id, ticket_id), new, None)])
        return MergeResult(sha=new, how="merge", merged_into=tb)
