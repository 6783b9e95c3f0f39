"""Planning: Tier 1 (an epic into tracks) and Tier 2 (a track into tickets), accepting and
editing tracks, and replacing a track's tickets.

Threads: the public methods are called from any thread and return futures; the coroutines run
on the conductor (loop) thread; each model call runs in an executor thread (`work`).
State owned: the last proposal and epic (`proposal`, `last_epic`), written on the loop thread. Tracks
and tickets are changed under the track lock (`_lock`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import re
from typing import Any

import prompts
from ai_client import run_structured
from engine.errors import MAX_EPIC_CHARS, EngineError, copy_track, describe, now_iso
from events import LogEvent, ProposalReady, StreamChunk, StreamEnd, TrackChanged
from models import (DagError, EpicPlan, Ticket, Track, TrackPlan, TrackProposal, dag_problems,
                    file_overlap_warnings, stream_tier1, stream_tier2, tickets_from_plan)
from tools import project_documents


class Planning:
    """Mixin of ConductorEngine: Tier 1 and Tier 2, and the person's edits of their plans."""

    def plan_epic(self, epic: str) -> concurrent.futures.Future[EpicPlan]:
        epic = epic if isinstance(epic, str) else ""
        if not epic.strip():
            raise EngineError("The epic is empty: describe what you want built, in a sentence "
                              "or a paragraph.")
        if len(epic) > MAX_EPIC_CHARS:
            raise EngineError(f"The epic is {len(epic):,} characters; the limit is "
                              f"{MAX_EPIC_CHARS:,}. Put long material in a file in the "
                              f"workspace and refer to it.")
        # kept in the comms log, so a restart shows it again (engine.history); no I/O here
        self.comms.record("epic", tier="Tier 1", stream_id=stream_tier1(), direction="-",
                          data={"epic": epic}, wait=False)
        return self.submit(self._plan_epic(epic))

    def _listing(self) -> str:
        try:
            return self.ws.list_dir(".")[:4000]
        except OSError as e:
            return f"(could not list the workspace: {e})"

    async def _plan_epic(self, epic: str) -> EpicPlan:
        loop = asyncio.get_running_loop()
        sid = stream_tier1()
        if self.streams.info().get(sid, {}).get("length"):
            self._emit(StreamChunk(stream_id=sid, text="\n\n--- new epic ---\n"))
        self.last_epic = epic

        def work() -> EpicPlan:
            # the planner reads the code: the map ranked for the epic and the project's documents
            sections = prompts.tier1_sections(epic, self._repo_map(epic),
                                              project_documents(self.workspace))
            self._note_context(sid, sections)
            system, user = prompts.render_sections(sections)
            session = self._session_for("Tier 1", sid, system, EpicPlan)
            try:
                plan = run_structured(session, user, EpicPlan, prompts.REPAIR_USER)
            finally:
                self._retire(session)
            assert isinstance(plan, EpicPlan)
            return plan

        try:
            plan = await loop.run_in_executor(self._executor, work)
        except Exception as e:
            self._fail_stream(sid, f"Tier 1 could not plan the epic: {describe(e)}")
            raise
        self._emit(StreamEnd(stream_id=sid, state="done"))
        self.proposal = plan
        self._emit(ProposalReady(epic=epic, tracks=tuple(t.model_dump() for t in plan.tracks)))
        return plan

    def accept_tracks(self, proposals: list[TrackProposal]) -> concurrent.futures.Future[list[Track]]:
        props = [p if isinstance(p, TrackProposal) else TrackProposal.model_validate(p)
                 for p in proposals]
        if not props:
            raise EngineError("no tracks to accept: keep at least one, or cancel")
        return self.submit(self._accept(props))

    async def _accept(self, props: list[TrackProposal]) -> list[Track]:
        out = []
        now = now_iso()
        for p in props:
            tid = self.store.new_track_id(p.title)
            track = Track(id=tid, title=p.title.strip(), goal=p.goal.strip(),
                          acceptance_criteria=[c.strip() for c in p.acceptance_criteria if c.strip()],
                          status="new", created_at=now, updated_at=now)
            await asyncio.get_running_loop().run_in_executor(self._io, self.store.create_track,
                                                             track)
            with self._lock:
                self._tracks[tid] = track
            self._emit(TrackChanged(track_id=tid))
            self._emit(LogEvent(message=f"track {tid} created: {track.title}"))
            out.append(copy_track(track))
        self.proposal = None
        return out

    def update_track(self, track_id: str, *, title: str | None = None, goal: str | None = None,
                     acceptance_criteria: list[str] | None = None) -> concurrent.futures.Future[Track]:
        return self.submit(self._update_track(track_id, title, goal, acceptance_criteria))

    async def _update_track(self, track_id: str, title: str | None, goal: str | None,
                            criteria: list[str] | None) -> Track:
        track = self._get(track_id)
        with self._lock:
            if title is not None:
                if not title.strip():
                    raise EngineError("a track's title must not be empty")
                track.title = title.strip()
            if goal is not None:
                track.goal = goal.strip()
            if criteria is not None:
                track.acceptance_criteria = [c.strip() for c in criteria if c.strip()]
        self._save(track)
        await self._flush()
        self._emit(TrackChanged(track_id=track_id))
        return copy_track(track)

    def _get(self, track_id: str) -> Track:
        with self._lock:
            t = self._tracks.get(track_id)
        if t is None:
            raise EngineError(f"no track {track_id!r}")
        return t


    def plan_track(self, track_id: str) -> concurrent.futures.Future[Track]:
        self._get(track_id)
        if self.is_running(track_id):
            raise EngineError(f"track {track_id} is running; pause it and let it finish "
                              f"before planning it again")
        return self.submit(self._plan_track(track_id))

    def _next_ticket_number(self) -> int:
        n = 0
        with self._lock:
            for t in self._tracks.values():
                for k in t.tickets:
                    m = re.fullmatch(r"T-(\d+)", k.id)
                    if m:
                        n = max(n, int(m.group(1)))
        return n + 1

    async def _plan_track(self, track_id: str) -> Track:
        loop = asyncio.get_running_loop()
        track = self._get(track_id)
        sid = stream_tier2(track_id)
        first = self._next_ticket_number()
        focus_text = "\n".join([track.title, track.goal, *track.acceptance_criteria])

        def check(plan: Any) -> None:
            problems = dag_problems(tickets_from_plan(plan))
            if problems:
                raise ValueError("the ticket graph is invalid: " + "; ".join(problems))

        def work() -> TrackPlan:
            # the map focused on the track: the files it names, and their neighbours, first
            sections = prompts.tier2_sections(track.title, track.goal,
                                              track.acceptance_criteria, first,
                                              self._repo_map(focus_text))
            # it may read the code first (bounded rounds); its notes go before the track
            notes = self._tier2_reading(track_id, sid, sections)
            sections = [*sections[:-1], *notes, sections[-1]]
            self._note_context(sid, sections)
            system, user = prompts.render_sections(sections)
            session = self._session_for("Tier 2", sid, system, TrackPlan, track_id=track_id)
            try:
                plan = run_structured(session, user, TrackPlan, prompts.REPAIR_USER, check)
            finally:
                self._retire(session)
            assert isinstance(plan, TrackPlan)
            return plan

        try:
            plan = await loop.run_in_executor(self._executor, work)
        except Exception as e:
            self._fail_stream(sid, f"Tier 2 could not plan track {track_id}: {describe(e)}",
                              track_id=track_id)
            raise
        tickets = self._unique_ids(tickets_from_plan(plan), track_id)
        with self._lock:
            track.tickets = tickets
            track.status = "planned"
        self._save(track)
        await self._flush()
        self._emit(StreamEnd(stream_id=sid, state="done"))
        for w in file_overlap_warnings(tickets):
            self._emit(LogEvent(message=f"{track_id}: {w}", level="warning"))
        self._emit(TrackChanged(track_id=track_id))
        self._status(track, None)
        self._prewarm(track_id, len(tickets))
        return copy_track(track)

    def _unique_ids(self, tickets: list[Ticket], track_id: str) -> list[Ticket]:
        """Ticket ids name streams, so they must be unique across the workspace: renumber any
        that another track already uses, rewriting dependencies to match."""
        with self._lock:
            taken = {k.id for tid, t in self._tracks.items() if tid != track_id for k in t.tickets}
        if not taken & {t.id for t in tickets}:
            return tickets
        n = self._next_ticket_number()
        rename: dict[str, str] = {}
        for t in tickets:
            if t.id in taken or t.id in rename.values():
                while f"T-{n:03d}" in taken:
                    n += 1
                rename[t.id] = f"T-{n:03d}"
                n += 1
        return [t.model_copy(update={"id": rename.get(t.id, t.id),
                                     "depends_on": [rename.get(d, d) for d in t.depends_on]})
                for t in tickets]

    def set_tickets(self, track_id: str, tickets: list[Ticket]) -> concurrent.futures.Future[Track]:
        """Replace a track's tickets (the user's edits before start). Raises DagError."""
        tickets = [t if isinstance(t, Ticket) else Ticket.model_validate(t) for t in tickets]
        problems = dag_problems(tickets)
        if problems:
            raise DagError(problems)
        if self.is_running(track_id):
            raise EngineError(f"track {track_id} is running: pause it and wait for its workers "
                              f"before editing its tickets")
        with self._lock:
            other = {k.id for tid, t in self._tracks.items() if tid != track_id for k in t.tickets}
        clash = sorted(other & {t.id for t in tickets})
        if clash:
            raise DagError([f"ticket id {c!r} is already used by another track" for c in clash])
        return self.submit(self._set_tickets(track_id, tickets))

    async def _set_tickets(self, track_id: str, tickets: list[Ticket]) -> Track:
        track = self._get(track_id)
        with self._lock:
            track.tickets = tickets
            if track.status == "new":
                track.status = "planned"
        self._save(track)
        await self._flush()
        self._emit(TrackChanged(track_id=track_id))
        return copy_track(track)

    # =========================================================================================
