"""Curation: what each agent is given to read (issue 19), as labelled sections with tokens.

Tier 1 gets the project's documents and the repository map ranked for the epic; Tier 2 the map
focused on its track; a Tier 3 worker its ticket, the map focused on its files, its context
files' skeletons and its small target files in full; Tier 4 the failure and the files it
touches. The shared parts come first and the specific part last, so providers' prompt caches
can reuse a prefix. Each agent's sections are noted in the session registry for the Usage
panel's context view.

Threads: every method runs on an executor thread (the agent's own, or a planner's); none runs
on the loop or the GUI thread (a map refresh reads the disk). State owned: the engine's one
`RepoMap` (`_repomap`, created under `_repomap_lock`; the map locks itself), and the last
map of each worktree a worker used (`_tree_maps`, under the same lock). A map that cannot
be built is a warning in the log and a line in the request saying why, never a lost request.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import prompts
from ai_client import RoundLimit, ToolCall, ToolOutcome
from engine.errors import EngineError, describe
from events import LogEvent, StreamChunk
from models import ContextSection, SectionInfo, Ticket, Track
from tools import TOOL_SPECS, RepoMap, failure_files, ticket_files

READ_SPECS = tuple(t for t in TOOL_SPECS if t.kind == "read")

PLAN_MAP_TOKENS = 2048      # Tier 1 and Tier 2 see the widest map
WORKER_MAP_TOKENS = 1024    # a worker's map is focused on its files: smaller
QA_FILE_TOKENS = 2000       # each file a failure touches, cut to this
_TREE_MAPS = 32             # worktrees whose last map is kept (a pool holds a few)


def _tree_identity(root: Path) -> str:
    """What identifies a linked worktree across `git worktree move`: its `.git` file (it names
    the tree's administrative directory, which a move keeps); "" when `root` is in none."""
    for d in (root, *root.parents):
        marker = d / ".git"
        if marker.is_file():
            try:
                return marker.read_text("utf-8", "replace").strip()
            except OSError:
                return ""
        if marker.exists():
            return ""
    return ""


class Curation:
    """Mixin of ConductorEngine: the repository map and each tier's context sections."""

    def _map(self) -> RepoMap:
        """The workspace's map, up to date (built once per engine, refreshed incrementally).
        Raises RuntimeError or OSError when it cannot be built."""
        with self._repomap_lock:
            if self._repomap is None:
                self._repomap = RepoMap(self.workspace)
            rm = self._repomap
        rm.refresh()
        return rm

    def _map_failed(self, e: Exception) -> str:
        """Executor thread: a warning on the event path (and the sentence for the request)."""
        msg = f"the repository map could not be built: {describe(e)}"
        self._emitter()(LogEvent(message=msg, level="warning"))
        return msg

    def _repo_map(self, text: str = "", budget_tokens: int = PLAN_MAP_TOKENS,
                  focus: Sequence[str] = ()) -> str:
        """The repository map ranked for `text` and `focus` (the files they name first, then
        what those import and what imports them), cut to a token budget. A map that cannot be
        built becomes a line saying why (and a warning), then the workspace's listing."""
        try:
            return self._map().render(focus=focus, text=text, budget_tokens=budget_tokens)
        except (RuntimeError, OSError) as e:
            return f"({self._map_failed(e)})\n{self._listing()}"

    def _tree_map(self, root: Path | None, changed: list[str] | None = None) -> RepoMap:
        """The map of the tree a worker works in: the workspace's own map, or (for a ticket's
        worktree, whose files may differ from the person's) a map of `root`. A worktree that
        was mapped before (a pooled tree: moved and switched to the next ticket's commit) is
        seeded with its own last map, so only the files its checkout rewrote are read; a new
        one with the workspace's, so only files whose content differs are parsed. Not cached
        on disk (no cache file may appear in a worker's tree). ``changed``: the paths that
        differ from the tree's last map, when nothing else was written in it since (a tree
        prepared and mapped ahead, then switched to its ticket's commit); only they are read."""
        if root is None or Path(root).resolve() == Path(self.workspace).resolve():
            return self._map()
        key = _tree_identity(Path(root))
        with self._repomap_lock:
            mine = self._tree_maps.get(key) if key else None
            base = self._repomap
        if mine is None and base is None:
            base = self._map()
        # a seed by content (digests decide) needs no refresh of the workspace's own map
        rm = RepoMap(root, persist=False, seed=mine or base, same_files=mine is not None,
                     lister=self._tb.lister() if self._tb is not None else None)
        rm.refresh(only=changed if mine is not None else None)
        if key:
            with self._repomap_lock:
                self._tree_maps.pop(key, None)
                self._tree_maps[key] = rm
                while len(self._tree_maps) > _TREE_MAPS:
                    self._tree_maps.pop(next(iter(self._tree_maps)))
        return rm

    def _worker_sections(self, track: Track, ticket: Ticket,
                         root: Path | None = None) -> list[ContextSection]:
        """A Tier 3 worker's context: system prompt, the map focused on the ticket's files,
        its context files' skeletons, its small target files in full, the ticket last. A file
        the ticket names that does not exist is said to be missing, never given to read.
        `root`: the tree the worker will work in (its worktree) when it is not the workspace,
        so the files it is shown are the files it will edit."""
        with self._lock:
            tid, desc, title = ticket.id, ticket.description, track.title
            targets = list(ticket.target_files)
            context = list(ticket.context_requirements)
            deps = list(ticket.depends_on)
            in_flux = self._in_flux(track, ticket)
        try:
            rm = self._tree_map(root, None if root is None else
                                self._changed_since_map(tid, Path(root)))
            repo_map = rm.render(focus=[*targets, *context], text=desc,
                                 budget_tokens=WORKER_MAP_TOKENS,
                                 exclude=in_flux - {*targets, *context})
            files = ticket_files(rm, targets, context)
            full, skeletons, missing = files.full, files.skeletons, files.missing
        except (RuntimeError, OSError) as e:
            repo_map = f"({self._map_failed(e)})"
            full, skeletons = {}, {}
            missing = [p for p in dict.fromkeys([*targets, *context])
                       if not (Path(root or self.workspace) / p).is_file()]
        return prompts.tier3_sections(
            tid, desc, title, targets, deps, repo_map, full_files=full, skeletons=skeletons,
            context_files=context, missing=missing)

    def _in_flux(self, track: Track, ticket: Ticket) -> set[str]:
        """Under the track lock: files other work may be changing while this worker runs, so
        its map leaves them out (they would show a half-written state, different from run to
        run): the target files of the track's tickets this one does not depend on (directly
        or not), and whatever running workers have written so far."""
        by_id = {k.id: k for k in track.tickets}
        ancestors: set[str] = set()
        todo = list(ticket.depends_on)
        while todo:
            k = todo.pop()
            if k not in ancestors and k in by_id:
                ancestors.add(k)
                todo.extend(by_id[k].depends_on)
        out = {f for k in track.tickets if k.id != ticket.id and k.id not in ancestors
               for f in k.target_files}
        with self._written_lock:
            out.update(f for k, files in self._written.items() if k != ticket.id for f in files)
        return out

    def _qa_sections(self, track_id: str, ticket_id: str, what: str,
                     output: str) -> list[ContextSection]:
        """Tier 4's context: system prompt, the files the failure touches (those its output
        names, then the ticket's target files), the failure. `what` and `output` arrive
        scrubbed; the files are scrubbed here (a key in a file never reaches a model)."""
        targets: list[str] = []
        with self._lock:
            track = self._tracks.get(track_id)
            found = next((k for k in track.tickets if k.id == ticket_id), None) if track else None
            if found is not None:
                targets = list(found.target_files)
        try:
            files = failure_files(self._map(), output + "\n" + what, targets, QA_FILE_TOKENS)
        except (RuntimeError, OSError) as e:
            self._map_failed(e)
            files = {}
        files = {p: self._scrub(t) for p, t in files.items()}
        return prompts.tier4_sections(ticket_id, what, output, files)

    def _tier2_reading(self, track_id: str, stream_id: str,
                       sections: list[ContextSection]) -> list[ContextSection]:
        """Tier 2 reads before it plans (settings.tier2_read_rounds rounds of read_file,
        list_dir and search_files, streamed on its stream like a worker), then writes notes; the
        notes become a section of the planning request (a fresh session: no provider has to
        mix tool calls with structured output). [] when reading is off, or on the offline
        model (which plans from the map). A reading that fails or runs out of rounds is a
        warning and the plan goes on without notes."""
        rounds = self.settings.tier2_read_rounds
        if not rounds or self.provider("Tier 2").name == "offline":
            return []
        system, user = prompts.render_sections(sections)
        system += "\n\n" + prompts.TIER2_READ_SYSTEM.format(rounds=rounds)

        def handler(call: ToolCall) -> ToolOutcome:
            if call.name not in {t.name for t in READ_SPECS}:
                return ToolOutcome({"ok": False, "error": f"{call.name}: Tier 2 may only read "
                                   f"(read_file, list_dir, search_files)"}, dict(call.args or {}))
            return self._handle_tool(session, call)
        session = self._session_for("Tier 2", stream_id, system, track_id=track_id,
                                    tools=READ_SPECS, tool_handler=handler)
        session.max_rounds = rounds + 1
        try:
            notes = session.send(user + "\n" + prompts.TIER2_READ_USER)
        except RoundLimit as e:
            self._emit_threadsafe_note(stream_id, f"reading stopped: {describe(e)}")
            return []
        finally:
            self._retire(session)
            session.tool_handler = None
        self._emit_threadsafe_note(stream_id, "--- notes taken; planning ---")
        return [prompts.notes_section(notes)] if notes.strip() else []

    def _emit_threadsafe_note(self, stream_id: str, text: str) -> None:
        self._emitter()(StreamChunk(stream_id=stream_id, text=f"\n{text}\n"))

    def _note_context(self, stream_id: str, sections: list[ContextSection]) -> None:
        """Keep what an agent was sent (for the Usage panel's context view)."""
        self._sessions.note_context(stream_id, sections)

    def context_sections(self, stream_id: str) -> list[SectionInfo]:
        """Any thread: the sections (label, kind, tokens, shared, path) the agent of
        `stream_id` was last sent; [] for a stream whose agent has not asked yet. The texts
        are in the comms log's request of that agent."""
        return self._sessions.context(stream_id)

    def contexts(self) -> dict[str, list[SectionInfo]]:
        """Any thread: every agent's last context sections, by stream id."""
        return self._sessions.contexts()

    def context_file(self, path: str) -> tuple[str, bool]:
        """Any thread but the loop (it reads the disk): a workspace file to add to a context,
        as (text, is_skeleton): in full when small, its definitions when large. EngineError
        with the reason for a path the map does not cover (missing, ignored, outside the
        workspace) or a binary file."""
        rel = path.strip().replace("\\", "/").removeprefix("./")
        if not rel:
            raise EngineError("a file added to the context needs a path")
        try:
            rm = self._map()
        except (RuntimeError, OSError) as e:
            raise EngineError(self._map_failed(e)) from e
        files = ticket_files(rm, [rel], [])
        if rel in files.full:
            return files.full[rel], False
        if rel in files.skeletons:
            return files.skeletons[rel], True
        if rel in files.binary:
            raise EngineError(f"{rel} is a binary file: it cannot go into a model's context")
        raise EngineError(f"{rel} is not a file of the workspace's repository map (missing, "
                          f"ignored by .gitignore, or outside the workspace)")
