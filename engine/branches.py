"""Branches: a git worktree per ticket, merged into its track branch in DAG order, and the
track merged into the person's branch only with their consent (issue 17).

In a git workspace with `worktrees` on, a track works on ``clutch/<track_id>`` (started at the
commit checked out when the track starts) and each ticket in its own worktree on
``clutch-ticket/<track_id>/<ticket_id>``, made from the track branch as it stands once the
ticket's dependencies are merged into it (a ticket starts only after they reported back, and
each ticket merges before it reports). The person's working tree is never written by a worker.
Outside git, or with worktrees off, tickets share the workspace directory as before (and the
engine says so in its notices).

The track's own branch, its merge into the person's branch and its tidying are in
engine/track_branch.py (TrackBranching); trees prepared ahead of need, and which of the
tickets started together is set up first, in engine/preparing.py (Preparing).

Threads: `_open_worktree`, `_land`, `_set_aside`, `_conflict_life`, `_resolved_by_person`
run on the ticket's executor thread; putting a landed ticket's tree
away (reset to the commit that landed it when it landed straight from its index, then
pooled; the track's last one only loses its branch, the track's tidying removes it) runs
on `_tidy_pool` (one thread) and preparing a dependent's tree on `_prep_pool`
(two), both at a lower priority, never in a ticket's way, and after the critical steps in
flight (a landing, a dependent's set-up, a track's end: `_setups`, see engine/setups.py);
`ticket_diff` on any thread. State owned: the running tickets' workspaces
(`_ticket_ws`, under `_ws_lock`), the tracks that run in worktree mode (`_wt_tracks`, under the
track lock), each finished track's removal of its trees (`_tidying`, under `_ws_lock`; see
TrackBranching), the critical steps in flight (`_setups`) and the pools. Branch moves and the
worktree administration are serialised inside TrackBranches.
"""
from __future__ import annotations

import logging
import concurrent.futures
import os
import sys
import pathlib
import threading
from typing import Any

import prompts
from ai_client import Cancelled
from engine.errors import EngineError, describe
from engine.setups import SetUps
from events import ErrorEvent, StreamChunk
from models import (ApprovalRequest, SpawnPayload, Ticket, Track,
                    stream_tier3, tick_subtasks)
from tools import MergeResult, TrackBranches, Workspace, WorktreeError

log = logging.getLogger(__name__)
BACKGROUND_NICENESS = 5     # the tidy and prepare threads (worker commands: WORKER_NICENESS)
LEAD_WAIT_S = 0.25          # the longest a ticket's set-up waits for a more critical one's


def _background_thread() -> None:
    """Initializer of a background pool's thread: on Linux a thread has a niceness of its own,
    which the processes it starts inherit."""
    if sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


class Branches:
    """Mixin of ConductorEngine: worktrees per ticket and the track's branch."""

    def _init_branches(self) -> None:
        """Constructor part (any thread, before the loop starts)."""
        self._tb: TrackBranches | None = None
        self._ws_lock = threading.Lock()
        self._ticket_ws: dict[str, Workspace] = {}
        self._wt_tracks: set[str] = set()
        self._tidying: dict[str, concurrent.futures.Future[None]] = {}
        self._init_preparing()
        self._setups = SetUps()     # the critical steps in flight: background work waits
        # the track's git work the loop hands off (its branch, its merge); tidying (nobody
        # waits for it) never queues behind it
        self._git_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="clutch-git")
        # what no ticket waits for yet (putting trees away, preparing them ahead) runs at a
        # lower priority, git processes included: the critical path gets the CPU first
        self._tidy_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="clutch-tidy", initializer=_background_thread)
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="clutch-prep", initializer=_background_thread)
        s = self.settings
        chosen = not (s.git_commits and s.worktrees)     # the person turned them off
        reason = ("git commits are off in the settings" if not s.git_commits else
                  "worktrees are off in the settings" if not s.worktrees else "")
        if not chosen:
            tb, reason = TrackBranches.detect(self.workspace)
            if tb is not None and tb.git.rev("HEAD") is None:
                tb, reason = None, "the repository has no commit yet (commit once, then run)"
            self._tb = tb
        self.shared_reason = reason if self._tb is None else ""
        if self._tb is None and not chosen:   # a choice of the person's is not news to them
            self.notices.append(
                f"Tickets share the workspace directory ({reason}): parallel tickets can see "
                f"each other's changes. In a git repository each ticket gets a worktree of "
                f"its own.")

    @property
    def worktrees_on(self) -> bool:
        return self._tb is not None

    def _ws_for(self, ticket_id: str) -> Workspace:
        """The workspace a ticket's tools run in: its worktree, or the shared directory."""
        with self._ws_lock:
            return self._ticket_ws.get(ticket_id, self.ws)

    # -- a ticket's worktree (its executor thread) ---------------------------------------------

    def _report_failure(self, fut: concurrent.futures.Future[Any], what: str, track_id: str,
                        ticket_id: str = "", level: int = logging.WARNING) -> None:
        """A background job's unexpected failure (preparing or tidying trees; git's own are
        reported where they happen) is logged and shown to the person as "``what``: why".
        None of them is fatal: a ticket whose tree was not prepared makes it as it starts."""
        def done(f: concurrent.futures.Future[Any]) -> None:
            e = None if f.cancelled() else f.exception()
            if e is not None:
                log.log(level, f"{what}: {describe(e)}")
                self._emitter()(ErrorEvent(message=f"{what}: {describe(e)}", track_id=track_id,
                                           ticket_id=ticket_id))
        fut.add_done_callback(done)

    def _open_worktree(self, track: Track, ticket: Ticket) -> pathlib.Path:
        """The ticket's worktree, made on the ticket's own thread (its spawn shows the worker
        the tree's files, so it waits for the tree anyway: a hand-off to another thread and
        back cost 0.3-1 ms of each critical link); its tools, commands and checks run there
        from now. A tree being prepared for it is waited for and brought forward; one whose
        preparation has not begun is not made twice."""
        tb = self._tb
        assert tb is not None
        with self._ws_lock:
            prep = self._prepared.pop(ticket.id, None)
        if prep is not None and prep.cancel():
            prep = None
        if prep is not None:
            concurrent.futures.wait([prep])   # its failure was reported; made here then
        switched: list = []
        try:
            path = tb.ticket_worktree(track.id, ticket.id, switched=switched)
        except WorktreeError as e:
            raise EngineError(f"could not make {ticket.id}'s worktree: {e}") from e
        self._note_switch(ticket.id, path, prepared=prep is not None, switched=switched)
        self._use_tree(ticket, path)
        with self._lock:
            ticket.branch = f"clutch-ticket/{track.id}/{ticket.id}"
        self._prepare_heirs(track, ticket)      # after its own tree: never in its way
        return path

    def _tree_workspace(self, path: pathlib.Path) -> Workspace:
        """A worktree as a Workspace: the settings' sandbox, hiding every other tree."""
        assert self._tb is not None
        s = self.settings
        ws = self.ws      # its probe of the sandbox holds for the same settings: not run again
        same = (ws.sandbox, ws.sandbox_network) == (s.sandbox, s.sandbox_network)
        return Workspace(self._tb.workspace_path(path), shell_timeout_s=s.shell_timeout_s,
                         sandbox=s.sandbox, sandbox_network=s.sandbox_network,
                         sandbox_hide=self._tb.sandbox_hide(),
                         probed=ws.sandbox_status() if same else None)

    def _use_tree(self, ticket: Ticket, path: pathlib.Path) -> Workspace:
        ws = self._tree_workspace(path)
        with self._ws_lock:
            self._ticket_ws[ticket.id] = ws
        return ws

    def _close_worktree(self, ticket: Ticket) -> None:
        with self._ws_lock:
            self._ticket_ws.pop(ticket.id, None)
        self._forget_prepared(ticket.id)

    def _remove_tree(self, track: Track, ticket: Ticket, keep_branch: bool) -> None:
        assert self._tb is not None
        try:
            self._tb.cleanup_ticket(track.id, ticket.id, keep_branch=keep_branch, discard=True,
                                    recycle=not keep_branch)
        except WorktreeError as e:
            self._tree_error(track, ticket, f"could not remove {ticket.id}'s worktree: {e}")
        if not keep_branch:
            with self._lock:
                ticket.branch = ""

    def _tree_error(self, track: Track, ticket: Ticket, message: str) -> None:
        """A failure tidying the ticket's tree or branches, said on its stream."""
        self._emitter()(ErrorEvent(message=message, stream_id=stream_tier3(ticket.id),
                                   track_id=track.id, ticket_id=ticket.id))

    def _pool_tree(self, track: Track, ticket: Ticket, res: MergeResult | None = None) -> None:
        """Tidy thread: a landed ticket's tree back to the pool, after the critical steps;
        one that landed straight from its index (``res.settle``) is first put on the commit
        that landed it (a tree that cannot be is removed, not pooled: its change is on the
        track). When no ticket of the track is left to take it, only its branch goes."""
        assert self._tb is not None
        self._setups.wait()
        with self._lock:
            more = any(k.status in ("todo", "in_progress") for k in track.tickets
                       if k.id != ticket.id)
        if not more:        # no ticket would take it from the pool: the track's tidying
            try:            # removes it with the others (its change is on the track)
                self._tb.release_ticket(track.id, ticket.id)
            except WorktreeError as e:
                self._tree_error(track, ticket, f"could not delete {ticket.id}'s branch: {e}")
            with self._lock:
                ticket.branch = ""
            return
        if res is not None and res.settle:
            try:
                self._tb.settle_landed(self._tb.worktree_path(track.id, ticket.id), res)
            except WorktreeError as e:      # said; the tree is removed below, not pooled
                self._tree_error(track, ticket, f"could not put {ticket.id}'s worktree on its "
                                                f"landed commit: {e}")
        self._remove_tree(track, ticket, keep_branch=False)

    def _set_aside(self, track: Track, ticket: Ticket, path: pathlib.Path, why: str) -> None:
        """A ticket that did not complete: whatever its worker wrote is committed on the
        ticket's own branch (on no other), and its worktree removed; the branch stays when it
        holds anything the track branch lacks."""
        assert self._tb is not None
        try:
            sha = self._tb.commit_ticket(path, f"{ticket.id}: unfinished ({why[:80]})\n\n"
                                               f"Kept by Clutch; not merged.")
            own = self._tb.git.out("rev-list", "--count", f"{track.branch}..HEAD",
                                   cwd=path) != "0"
        except WorktreeError as e:
            sha, own = None, True
            self._emitter()(ErrorEvent(message=f"could not keep {ticket.id}'s unfinished work on "
                                               f"its branch: {e}", track_id=track.id,
                                       ticket_id=ticket.id, stream_id=stream_tier3(ticket.id)))
        branch = ticket.branch
        self._remove_tree(track, ticket, keep_branch=own)
        if own:
            with self._lock:
                if ticket.blocked_reason and sha:
                    ticket.blocked_reason += (f" (its unfinished work is kept on branch "
                                              f"{branch}, on no other)")

    def _land(self, track: Track, ticket: Ticket, path: pathlib.Path, cancel: threading.Event,
              message: str) -> str:
        """Commit the ticket's tree and merge it into the track branch; the commit's SHA on
        the track branch. A conflict goes to `_conflict_life`."""
        assert self._tb is not None
        landing = f"land:{ticket.id}"     # ended by the scheduler, once its heirs started
        self._setups.begin(landing)
        res = self._tb.land_ticket(track.id, ticket.id, path, message, settle=False)
        if res is None:
            return ""
        if res.conflict:        # a repair, or the person's choice: no critical step
            self._setups.end(landing)
            res = self._conflict_life(track, ticket, res, cancel)
            self._setups.begin(landing)
        if not res.ok or res.sha is None:
            raise EngineError(res.message or f"{ticket.id}'s commit could not be merged into "
                                             f"{track.branch} ({res.how})")
        with self._lock:
            ticket.merge = res.how
        # its dependents need the merge, not the tidying: the tree goes to the pool off the
        # critical path, on the tidy thread, once their set-up is done
        self._report_failure(self._tidy_pool.submit(self._pool_tree, track, ticket, res),
                             f"could not tidy track {track.id}'s worktrees", track.id,
                             level=logging.ERROR)
        return res.sha

    def _conflict_life(self, track: Track, ticket: Ticket, res: MergeResult,
                       cancel: threading.Event) -> MergeResult:
        """A conflicting merge: a repair worker, through the spawn gate, in a fresh worktree
        holding the conflict; never a side dropped. Refused, or markers left: the ticket fails
        naming "conflict" and the paths; the track branch keeps the other side."""
        assert self._tb is not None
        paths = ", ".join(res.paths)
        sid = stream_tier3(ticket.id)
        with self._lock:
            ticket.merge = f"conflict in {paths}"
        self._emitter()(StreamChunk(stream_id=sid, text=f"\n  ⚠ merging into {track.branch} "
                                                        f"conflicts in {paths}\n"))
        sides = "\n\n".join(
            f"--- {p}\n<<< {track.branch} (already merged)\n{(s.ours or '(no such file)')[:3000]}\n"
            f">>> {ticket.id}'s change\n{(s.theirs or '(no such file)')[:3000]}"
            for p, s in res.sides.items())
        prompt = prompts.conflict_prompt(ticket.id, ticket.description, track.branch,
                                         list(res.paths))
        d = self.approvals.ask_from_thread(ApprovalRequest(
            kind="spawn", title=f"{ticket.id} conflicts with {track.branch}: spawn a worker to "
                                f"resolve it?", stream_id=sid, track_id=track.id,
            ticket_id=ticket.id,
            payload=SpawnPayload(prompt=prompt, context=sides,
                                 model=self.settings.model_for("Tier 3", ticket.model_override),
                                 description=f"conflict in {paths}", attempt=0)))
        if not d.approved:
            raise EngineError(
                f"merge conflict in {paths}: not resolved (the repair worker was refused"
                f"{': ' + d.reason if d.reason else ''}); the change is kept on {ticket.branch}, "
                f"{track.branch} keeps the other side. To resolve it yourself: `git switch "
                f"{track.branch} && git merge {ticket.branch}`, fix and commit, then Retry "
                f"{ticket.id}; to drop its change, Skip it")
        if isinstance(d.payload, SpawnPayload):
            prompt = d.payload.prompt
        path = self._tb.conflict_worktree(track.id, ticket.id)
        self._use_tree(ticket, path)
        try:
            self._run_worker(track.id, ticket.id, prompt, "", self.settings.model_for(
                "Tier 3", ticket.model_override), cancel, False, 0)
        except Cancelled:
            raise
        except Exception as e:
            raise EngineError(f"merge conflict in {paths}: the repair worker failed: "
                              f"{describe(e)}") from e
        finally:
            self._close_worktree(ticket)
        done = self._tb.finish_conflict(track.id, ticket.id)
        if done.conflict:
            raise EngineError(f"merge conflict in {', '.join(done.paths) or paths}: the repair "
                              f"worker left conflict markers; {track.branch} keeps the other "
                              f"side, the change is kept on {ticket.branch}")
        return done

    def _resolved_by_person(self, track: Track, ticket: Ticket) -> bool:
        """Executor thread, at a retry: a ticket that failed on a conflict whose branch the
        person has since merged into the track branch themselves is completed by that merge
        (no worker runs again). False when that is not the case."""
        with self._lock:
            conflicted = ticket.merge.startswith("conflict") and bool(ticket.branch)
            branch = ticket.branch
        if not conflicted or not self._in_worktrees(track):
            return False
        assert self._tb is not None
        git = self._tb.git
        tip, track_tip = git.rev(f"refs/heads/{branch}"), git.rev(f"refs/heads/{track.branch}")
        if tip is None or track_tip is None or not git.is_ancestor(tip, track_tip):
            return False
        carried = git.out("rev-list", "--ancestry-path", "--reverse", f"{tip}..{track_tip}")
        sha = (carried.split() or [track_tip])[0]
        self._completed_by(track, ticket, sha, "resolved by you",
                           f"{branch} is merged into {track.branch} ({sha[:12]}): the conflict "
                           f"was resolved by you; no worker runs again")
        return True

    def _landed_before(self, track: Track, ticket: Ticket) -> bool:
        """Executor thread, as a ticket starts: a ticket whose commit already landed on the
        track branch (a run killed after the landing, before it saved the ticket completed)
        is completed by that commit, and no worker runs again (a second worker would redo
        the change on top of itself and fail, or change it twice). False when it has not."""
        if not self._in_worktrees(track):
            return False
        assert self._tb is not None
        sha = self._tb.landed(track.id, ticket.id)
        if sha is None:
            return False
        self._completed_by(track, ticket, sha, "landed before the last run stopped",
                           f"{ticket.id} landed on {track.branch} ({sha[:12]}) before the last "
                           f"run stopped: counted, not done again")
        return True

    def _completed_by(self, track: Track, ticket: Ticket, sha: str, merge: str,
                      note: str) -> None:
        """Executor thread: the ticket completed by a commit already on the track branch,
        without a worker; its tree and branches go, and its stream says why."""
        assert self._tb is not None
        try:
            self._tb.cleanup_ticket(track.id, ticket.id, discard=True)
        except WorktreeError as e:
            self._emitter()(ErrorEvent(message=f"could not remove {ticket.id}'s worktree and "
                                               f"branch: {e}",
                                       track_id=track.id, ticket_id=ticket.id))
        with self._lock:
            ticket.status, ticket.commit_sha, ticket.blocked_reason = "completed", sha, ""
            ticket.description = tick_subtasks(ticket.description)
            ticket.merge, ticket.branch = merge, ""
        self._emitter()(StreamChunk(stream_id=stream_tier3(ticket.id), text=f"\n  ✓ {note}\n"))

    # -- see one ticket ------------------------------------------------------------------------

    def ticket_diff(self, ticket_id: str) -> dict[str, Any]:
        """{files, diff, branch, commit} of one ticket: its merged commit on the track branch
        (or its own branch before that), or its commit in a shared-directory git workspace."""
        track, ticket = self._find(ticket_id)
        with self._lock:
            sha, branch = ticket.commit_sha, ticket.branch
        try:
            if self._tb is not None and track.branch and (sha or branch):
                try:
                    files, diff = self._tb.ticket_diff(track.id, ticket.id)
                except WorktreeError:     # e.g. its branch went with a reverted track
                    files, diff = self._commit_diff(sha)
            else:
                files, diff = self._commit_diff(sha)
        except WorktreeError as e:
            raise EngineError(f"cannot show {ticket_id}'s change: {e}") from e
        return {"ticket_id": ticket.id, "track_id": track.id, "commit": sha, "branch": branch,
                "files": files, "diff": self._scrub(diff)}

    def _commit_diff(self, sha: str) -> tuple[list[str], str]:
        if not sha:
            return [], ""
        git = self._tb.git if self._tb is not None else None
        if git is None:
            if self._git is None:
                return [], ""
            from tools import GitRunner
            git = GitRunner(pathlib.Path(self.workspace))
        files = [f for f in git.out("show", "--format=", "--name-only", sha).splitlines() if f]
        return files, git.out("show", "--format=", sha)
