"""A track's branch: made when the track starts, merged into the person's branch only with
their consent when it completes, its worktrees tidied away as it reports (issue 17).

A mixin of ConductorEngine beside `Branches` (a ticket's worktree). Threads: `_start_branch`,
`_finish_branch` and `_merge_track` are coroutines on the loop thread, which hand their git
work to `_git_pool`; `_prewarm` is called on the loop and fills a track's pool on the tidy
thread; the tidy jobs run on the tidy thread (one thread, first in first out: a track's
removal runs after its tickets' trees were put away); `settle` and `_drain_unused_pools` on
the thread that closes the engine (or a test's), `_tidy_left_trees` on the one that starts
it. State owned: none of its own; it uses what `Branches` owns: the workspace's
TrackBranches (`_tb`), the tracks in worktree mode (`_wt_tracks`, under the track lock), the
pools, the trees being prepared (`_prepared`) and each finished track's tidy job
(`_tidying`, both under `_ws_lock`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from engine.errors import EngineError
from engine.setups import MERGE
from events import ErrorEvent, TrackChanged
from models import ApprovalRequest, MergePayload, Track
from tools import MergeResult, WorktreeError, drain_pool

log = logging.getLogger(__name__)
_DIFF_LIMIT = 200_000      # characters of a combined diff shown in the merge approval


class TrackBranching:
    """Mixin of ConductorEngine: the track's branch, its merge and its tidying."""

    # -- a track's branch (loop thread) --------------------------------------------------------

    async def _start_branch(self, track: Track) -> None:
        """The track's branch, made (or found again on resume) before its first ticket."""
        if self._tb is None:
            return
        await self._tidied(track.id)
        loop = asyncio.get_running_loop()
        try:
            tr = await loop.run_in_executor(self._git_pool, self._tb.start_track, track.id)
        except WorktreeError as e:
            with self._lock:
                self._wt_tracks.discard(track.id)
            self._emit(ErrorEvent(message=f"track {track.id} runs without worktrees: {e}; its "
                                          f"tickets share the workspace directory",
                                  track_id=track.id))
            return
        with self._lock:
            self._wt_tracks.add(track.id)
            track.branch = tr.branch

    def _prewarm(self, track_id: str, tickets: int) -> None:
        """A planned track's first worktrees are checked out while the person reads its
        tickets (a fresh checkout of a big repository takes seconds; a pooled one is reused
        by checking out only what differs), one at a time so a ticket that starts meanwhile
        waits for one checkout at most."""
        if self._tb is None or tickets <= 0:
            return
        tb = self._tb
        for n in range(1, min(self.settings.max_workers, tickets) + 1):
            self._report_failure(self._tidy_pool.submit(tb.prewarm, track_id, n),
                                 f"could not prepare worktrees for {track_id}", track_id)

    def _drain_unused_pools(self) -> None:
        """At close: the prepared trees of tracks that never started go, so the person's
        `git worktree list` holds none of them (a ticket's own tree stays for --resume)."""
        if self._tb is None:
            return
        with self._lock:
            idle = [tid for tid, t in self._tracks.items()
                    if tid not in self._wt_tracks and t.status in ("new", "planned")]
        for tid in idle:
            try:
                drain_pool(self._tb, tid)
            except WorktreeError as e:
                log.warning(f"could not remove the prepared worktrees of {tid}: {e}")

    def _tidy_left_trees(self) -> None:
        """As the engine starts, what a killed run left behind goes: at once, the trees it was
        still making (`drop_half_made`: one of them can stop `git worktree list` working at
        all); then, on the tidy thread, which `settle` and `close` wait for, the trees of
        tracks that are completed (every ticket landed, so nothing of anyone's is in them:
        pooled trees, a landed ticket's tree; a completed track is never resumed, so nothing
        else would remove them). Unfinished tracks keep theirs for --resume."""
        tb = self._tb
        if tb is None:
            return
        try:
            for tree in tb.drop_half_made():
                log.warning(f"removed {tree}: a run that stopped was still making it")
        except (OSError, WorktreeError) as e:
            self._emitter()(ErrorEvent(message=f"could not remove the worktrees a stopped run "
                                               f"left half-made: {e}"))
        with self._lock:
            done = [t.id for t in self._tracks.values() if t.status == "completed"]
        for tid in done:
            if tb.has_trees(tid):
                self._tidy_later(tid, [], f"could not remove the worktrees left for {tid}")

    def _in_worktrees(self, track: Track) -> bool:
        with self._lock:
            return self._tb is not None and track.id in self._wt_tracks

    async def _finish_branch(self, track: Track, clean: bool) -> Callable[[], None] | None:
        """The track stopped. Completed: ask to merge it into the person's branch (unless
        merging is off). Returns the removal of its worktrees (`clean`: nothing of it is
        running), for the scheduler to start on the tidy thread once the track's last state
        is written, before it reports: nobody waits for a directory to be deleted (`settle`
        and `close` do), and that last write does not share the disk and the cores with
        it. Its unmerged branches stay."""
        if not self._in_worktrees(track):
            return None
        assert self._tb is not None
        if track.status == "completed" and not track.merged_into and self.settings.merge_tracks:
            await self._merge_track(track)
        with self._ws_lock:     # trees prepared for tickets that did not start go too
            preps = [self._prepared.pop(k.id) for k in track.tickets if k.id in self._prepared]
        for f in preps:
            f.cancel()
        if not clean:
            return None
        return lambda: self._tidy_later(track.id, preps,
                                        f"could not tidy track {track.id}'s worktrees")

    def _tidy_later(self, track_id: str, preps: list[concurrent.futures.Future[Any]],
                    what: str) -> None:
        """`_tidy_track` on the tidy thread, recorded in `_tidying` so that `settle`, `close`
        and the track's next start wait for it; a failure reported as "``what``: why"."""
        job = self._tidy_pool.submit(self._tidy_track, track_id, preps)
        with self._ws_lock:
            self._tidying[track_id] = job
        self._report_failure(job, what, track_id, level=logging.ERROR)

    def _tidy_track(self, track_id: str, preps: list[concurrent.futures.Future[Any]]) -> None:
        """Tidy thread: the track's worktrees and pooled trees removed (branches kept), once
        the trees still being prepared for it are made."""
        assert self._tb is not None
        concurrent.futures.wait(preps)
        try:
            self._tb.cleanup_track(track_id, keep_branch=True, discard=True)
        except WorktreeError as e:
            self._emitter()(ErrorEvent(message=f"could not remove track {track_id}'s "
                                               f"worktrees: {e}", track_id=track_id))

    async def _tidied(self, track_id: str) -> None:
        """Loop: a track starting again waits until its last run's trees are gone (a tidy
        job that failed was reported (`_report_failure`); the track starts all the same)."""
        with self._ws_lock:
            job = self._tidying.pop(track_id, None)
        if job is not None:
            await asyncio.wait({asyncio.wrap_future(job)})

    def settle(self, timeout: float = 60.0) -> None:
        """Any thread but the loop: wait until the worktrees of every finished track are
        removed (what `git worktree list` shows after a run; `close` calls it)."""
        with self._ws_lock:
            jobs = list(self._tidying.values())
        done, pending = concurrent.futures.wait(jobs, timeout=timeout)
        if pending:
            raise EngineError(f"{len(pending)} track(s) still removing their worktrees after "
                              f"{timeout:g} s")
        with self._ws_lock:
            for tid in [t for t, j in self._tidying.items() if j in done]:
                del self._tidying[tid]

    async def _merge_track(self, track: Track) -> None:
        assert self._tb is not None
        loop = asyncio.get_running_loop()
        tb = self._tb
        try:        # the track and its combined diff in one hop (the diff in-process)
            tr, combined = await loop.run_in_executor(self._git_pool, tb.track_diff, track.id)
        except WorktreeError as e:
            self._emit(ErrorEvent(message=str(e), track_id=track.id))
            return
        if tr.head == tr.base_sha:
            return                # no ticket committed anything: nothing to merge, nobody asked
        if not tr.base:
            self._emit(ErrorEvent(message=f"{tr.branch} is kept: the track started on a detached "
                                          f"HEAD, so there is no branch to merge it into",
                                  track_id=track.id))
            return
        cost = self._costs_by_ticket(track.id)
        tickets = [{"id": k.id, "commit": k.commit_sha[:12], "status": k.status,
                    "cost_usd": round(cost.get(k.id, 0.0), 6),
                    "title": (k.description.strip().splitlines() or [""])[0][:120]}
                   for k in track.tickets]
        person = not self.approvals.auto_approve     # their reading time is background time
        if person:
            self._setups.end(MERGE + track.id)
        d = await self.approvals.ask(ApprovalRequest(
            kind="merge", title=f"Merge track {track.id} into {tr.base}?", track_id=track.id,
            stream_id="", payload=MergePayload(branch=tr.branch, into=tr.base,
                                               diff=self._scrub(combined[:_DIFF_LIMIT]),
                                               tickets=tickets)))
        if person and d.approved:
            self._setups.begin(MERGE + track.id)       # ended as the track reports
        if not d.approved:
            self._emit(ErrorEvent(message=f"{tr.branch} is kept, not merged into {tr.base}"
                                          + (f": {d.reason}" if d.reason else ""),
                                  track_id=track.id))
            return
        try:
            res: MergeResult = await loop.run_in_executor(self._git_pool, tb.merge_track,
                                                          track.id)
        except WorktreeError as e:
            self._emit(ErrorEvent(message=f"{tr.branch} is kept: {e}", track_id=track.id))
            return
        if not res.ok:
            why = res.message or (f"conflict in {', '.join(res.paths)}" if res.conflict else res.how)
            self._emit(ErrorEvent(message=f"{tr.branch} is kept, not merged into {tr.base}: "
                                          f"{why}", track_id=track.id))
            return
        with self._lock:
            track.merged_into = res.merged_into or tr.base
        self._save(track)
        self._emit(TrackChanged(track_id=track.id))

    def _costs_by_ticket(self, track_id: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, u in self.usage("ticket").items():
            out[str(key)] = u.cost_usd
        return out
