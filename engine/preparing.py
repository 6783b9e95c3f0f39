"""Preparing: a ticket's worktree made ahead of need, and the order in which tickets that
start together are set up (issue 17).

A mixin of ConductorEngine beside `Branches` (a ticket's worktree). While a ticket works, the
tickets that will be ready once it lands get their trees (a pooled tree, or a new checkout:
seconds in a big repository) and the repository map of each, so a dependent starts by
checking out only what landed meanwhile and by reading only those files for its context
(`_changed_since_map`: the tree was prepared and mapped here, and nothing but Clutch's own
switch has written it since). Tickets started together set up the one heading the longest
chain first (`_lead_first`).

Threads: `_lead_first` on the loop thread; `_prepare_heirs` on a ticket's thread once its own
tree is open; `_prepare_one` on `_prep_pool` (two threads at a lower priority, after the
critical steps in flight: `_setups`, engine/setups.py); `_note_switch` on the ticket's thread
as its tree is set up; `_changed_since_map`, `_followers_go` and `_forget_prepared` on the
ticket's thread. State owned, all under `_ws_lock`, by ticket id: the trees being prepared
(`_prepared`), the critical tickets whose set-up the others started with them wait for
(`_leads`), the commit a prepared tree was mapped at (`_mapped_at`) and, once the ticket's
set-up switched it on, its directory and the paths changed since (`_switched`).
"""
from __future__ import annotations

import concurrent.futures
import logging
import pathlib
import threading
from typing import Any

from engine.ready import ReadySet
from models import SATISFIED_STATES, Ticket, Track

log = logging.getLogger(__name__)


class Preparing:
    """Mixin of ConductorEngine: trees prepared ahead, and which set-up goes first."""

    def _init_preparing(self) -> None:
        """Constructor part (any thread, before the loop starts)."""
        self._prepared: dict[str, concurrent.futures.Future[Any]] = {}
        self._leads: dict[str, threading.Event] = {}
        self._mapped_at: dict[str, str] = {}
        self._switched: dict[str, tuple[str, list[str]]] = {}

    def _lead_first(self, track: Track, batch: list[Ticket], ready: ReadySet
                    ) -> threading.Event | None:
        """Loop thread, as tickets that became ready together start: when the first heads a
        longer chain than the rest (the critical one), the others' set-up waits until its
        own is done (its tree open, its context built; at most LEAD_WAIT_S), so it does not
        share the disk and the cores with theirs. The event they wait on, or None."""
        if len(batch) < 2 or not self._in_worktrees(track) or \
                ready.chain(batch[0].id) <= max(ready.chain(t.id) for t in batch[1:]):
            return None
        lead = threading.Event()
        with self._ws_lock:
            self._leads[batch[0].id] = lead
        return lead

    def _followers_go(self, ticket_id: str) -> None:
        """The ticket's set-up is done (or it ended before): tickets waiting on it go, and
        background git work no longer gives way to it."""
        with self._ws_lock:
            lead = self._leads.pop(ticket_id, None)
        if lead is not None:
            lead.set()
        self._setups.end(ticket_id)

    def _note_switch(self, ticket_id: str, path: pathlib.Path, prepared: bool,
                     switched: list[tuple[str, list[str]]]) -> None:
        """Ticket thread, once the ticket's tree is set up at ``path``: when this process
        prepared and mapped it (no worker has had it, and its set-up checked out the track
        tip over it: clean at its new HEAD), what changed since that map is noted for the
        spawn's map: the paths the switch rewrote (``switched``, from ticket_worktree) when
        it started from the mapped commit, else the commits compared. Whatever an earlier
        set-up of the ticket noted goes first: a note describes this set-up's tree only."""
        with self._ws_lock:
            at = self._mapped_at.pop(ticket_id, None)
            self._switched.pop(ticket_id, None)
        tb = self._tb
        if not prepared or at is None or tb is None:
            return
        paths = next((p for start, p in switched if start == at), None)
        if paths is None:
            got = tb.changed_since(path, at)
            paths = got[1] if got is not None else None
        if paths is not None:
            with self._ws_lock:
                self._switched[ticket_id] = (str(tb.workspace_path(path)), paths)

    def _forget_prepared(self, ticket_id: str) -> None:
        """The ticket stopped: what was noted about its prepared tree goes (a later tree at
        the same place is another tree)."""
        with self._ws_lock:
            self._switched.pop(ticket_id, None)
            self._mapped_at.pop(ticket_id, None)

    def _changed_since_map(self, ticket_id: str, root: pathlib.Path) -> list[str] | None:
        """Once, at the ticket's spawn: the paths that differ between the ticket's tree
        (``root``) and the map its preparation made of it; None when that is not known, and
        the whole tree is looked at. Only Clutch's switch wrote the tree since: the note is
        made as the ticket's own thread sets its tree up on the way to this spawn, and no one
        writes the tree in between; a later set-up replaces the note, and a ticket that
        stops drops it (`_forget_prepared`)."""
        with self._ws_lock:
            got = self._switched.pop(ticket_id, None)
        return got[1] if got is not None and got[0] == str(root) else None

    def _prepare_heirs(self, track: Track, ticket: Ticket) -> None:
        """Ticket thread, once `ticket`'s own tree is open: the tickets that will be ready
        once it and the other running ones land get their trees now, while they work (a
        pooled tree, or a new checkout of the whole repository: seconds in a big one), so
        each of them starts by checking out only what those tickets changed. At most
        max_workers trees wait so."""
        if not self._in_worktrees(track):
            return
        tb = self._tb
        assert tb is not None
        with self._lock:
            status = {k.id: k.status for k in track.tickets}
            heirs = [k.id for k in track.tickets
                     if ticket.id in k.depends_on and k.status == "todo"
                     and all(status.get(d) in SATISFIED_STATES or status.get(d) == "in_progress"
                             for d in k.depends_on)]
        with self._ws_lock:
            for tid in heirs:
                waiting = sum(1 for f in self._prepared.values() if not f.done())
                if tid in self._prepared or waiting >= self.settings.max_workers:
                    continue
                fut = self._prepared[tid] = self._prep_pool.submit(self._prepare_one,
                                                                   track.id, tid)
                self._report_failure(fut, f"could not prepare {tid}'s worktree ahead of its "
                                          f"start", track.id, tid)

    def _prepare_one(self, track_id: str, ticket_id: str) -> pathlib.Path | None:
        """Prepare thread: the tree, and its repository map, so the spawn reads only the files
        the tickets it waits for changed (a map that cannot be made is said at the spawn);
        after the critical steps in flight, unless the ticket itself waits for it."""
        assert self._tb is not None
        with self._ws_lock:
            self._mapped_at.pop(ticket_id, None)    # an earlier preparation's
        self._setups.wait(for_ticket=ticket_id)
        path = self._tb.prepare_worktree(track_id, ticket_id)
        if path is not None:
            try:
                self._tree_map(self._tb.workspace_path(path))
            except (RuntimeError, OSError) as e:
                log.info(f"{ticket_id}'s prepared tree is mapped at its spawn instead: {e}")
                return path
            head = self._tb.tree_head(path)
            if head is not None:
                with self._ws_lock:
                    self._mapped_at[ticket_id] = head
        return path

