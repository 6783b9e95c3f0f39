"""ConductorStore: the tracks and settings of one workspace, the one object other layers use.

    <workspace>/conductor/
        product.md, tech-stack.md, workflow.md, index.md   project notes (only in a new project)
        tracks.md                                           the registry
        tracks/<track_id>/
            spec.md  plan.md  metadata.json  index.md       the Conductor files
            state.toml                                      ours: what the format has no place for
    <workspace>/.clutch/                                    git-ignored ("*"): config.toml, sessions/

Files someone else wrote are edited in place (see plan, spec, registry, metadata); a track
Clutch creates is written in the extension's templates. Saves are thread-safe through one
instance (one lock); they run on the engine's I/O thread, the CLI's thread, or a test's. The
instance owns the lock and a small cache of what the last saves of a few tracks wrote (so
saving a big track again costs in proportion to what changed).
"""
from __future__ import annotations

import collections
import datetime as _dt
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import Settings, Track
from store import fsio
from store import metadata as meta_mod
from store import plan as plan_mod
from store import registry as reg_mod
from store import settings as settings_mod
from store import spec as spec_mod
from store.errors import LoadProblem, StoreError, TrackExistsError
from store.loader import load_folder, read_text, track_status
from store.names import check_track_id, id_prefix, one_line, phase_label, shortname
from store.notes import NOTES_FILES, track_index_text
from store.state import read_state, render_state
from store.tickets import match_ids

_RECENT_TRACKS = 8   # tracks whose last save ConductorStore remembers


@dataclass
class _SaveCache:
    """What the last save of one track wrote."""
    state_bytes: bytes | None = None
    tickets: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    plan_bytes: bytes | None = None
    plan: plan_mod.Plan | None = None      # the parse of plan_bytes (with the BOM flag)
    plan_bom: bool = False
    status: str | None = None              # the track status that save wrote


class ConductorStore:
    """Tracks and settings of one workspace. Thread-safe for saves through one instance."""

    def __init__(self, workspace: str | os.PathLike):
        self.workspace = Path(workspace).absolute()
        self.conductor_dir = self.workspace / "conductor"
        self.tracks_dir = self.conductor_dir / "tracks"
        self.clutch_dir = self.workspace / ".clutch"
        self._lock = threading.RLock()
        self._recent: collections.OrderedDict[str, _SaveCache] = collections.OrderedDict()

    # -- layout ---------------------------------------------------------------------------

    @property
    def registry_path(self) -> Path:
        return self.conductor_dir / "tracks.md"

    def ensure_layout(self) -> None:
        """A new project: conductor/ with the notes files and tracks.md. An existing one (a
        conductor/ folder with anything in it) gets nothing the extension would read
        differently: no index.md, no notes. .clutch/ is made and git-ignored. Never overwrites."""
        with self._lock:
            try:
                fresh = not self.conductor_dir.exists() or not any(self.conductor_dir.iterdir())
                self.tracks_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {self.tracks_dir}: {e}") from e
            if fresh:
                for name, text in NOTES_FILES.items():
                    fsio.write_if_absent(self.conductor_dir / name, text)
                fsio.write_if_absent(self.registry_path, reg_mod.REGISTRY_HEADER)
            self._ensure_clutch_dir()

    def _ensure_clutch_dir(self) -> None:
        try:
            self.clutch_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {self.clutch_dir}: {e}") from e
        fsio.write_if_absent(self.clutch_dir / ".gitignore", "*\n")

    def sessions_dir(self) -> Path:
        """workspace/.clutch/sessions, created (with .clutch/.gitignore) so logs never dirty git."""
        self._ensure_clutch_dir()
        path = self.clutch_dir / "sessions"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {path}: {e}") from e
        return path

    def new_track_id(self, title: str, today: _dt.date | None = None) -> str:
        """"Add a /health endpoint" -> "add_health_endpoint_20261124" ("_2", "_3"... if taken)."""
        day = today or _dt.date.today()
        base = f"{shortname(title)}_{day:%Y%m%d}"
        cand, n = base, 2
        while (self.tracks_dir / cand).exists() or (self.conductor_dir / "archive" / cand).exists():
            cand = f"{base}_{n}"
            n += 1
        return cand

    # -- writing tracks ---------------------------------------------------------------------

    def create_track(self, track: Track) -> None:
        """A new track folder in the extension's templates, and its registry entry appended."""
        check_track_id(track.id)
        folder = self.tracks_dir / track.id
        with self._lock:
            if folder.exists():
                raise TrackExistsError(f"track {track.id} already exists at {folder}")
            self.ensure_layout()
            try:
                folder.mkdir(parents=True, exist_ok=False)
            except FileExistsError as e:
                raise TrackExistsError(f"track {track.id} already exists at {folder}") from e
            except OSError as e:
                raise StoreError(f"cannot create {folder}: {e}") from e
            self._save(track, new=True)

    def save_track(self, track: Track) -> None:
        """Write what changed, each file atomically, state.toml first. The Conductor files are
        edited in place: task markers, SHAs appended to ticked tasks, tasks the plan lacks,
        the registry marker, metadata.json's status/updated_at; spec.md's title, goal or
        criteria only when they differ from what it says. A folder that did not exist is
        created as create_track does. An empty created_at/updated_at is set to now."""
        check_track_id(track.id)
        with self._lock:
            self._save(track, new=not (self.tracks_dir / track.id).exists())

    def _cache(self, track_id: str) -> _SaveCache:
        cache = self._recent.pop(track_id, None) or _SaveCache()
        self._recent[track_id] = cache
        while len(self._recent) > _RECENT_TRACKS:
            self._recent.popitem(last=False)
        return cache

    def _save(self, track: Track, new: bool) -> None:
        seen: set[str] = set()
        dups = sorted({t.id for t in track.tickets if t.id in seen or seen.add(t.id)})
        if dups:
            raise StoreError(f"track {track.id}: duplicate ticket ids {', '.join(dups)}; not saved")
        folder = self.tracks_dir / track.id
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {folder}: {e}") from e
        now = fsio.utc_now()
        track.created_at = track.created_at or now
        track.updated_at = track.updated_at or now
        cache = self._cache(track.id)
        plan_path, spec_path = folder / "plan.md", folder / "spec.md"
        meta_path, state_path = folder / "metadata.json", folder / "state.toml"

        # What the files say now, before anything is written (a render error leaves them alone).
        reg_text = fsio.read_for_edit(self.registry_path)
        entry = (reg_mod.find_entry(reg_mod.parse_registry(reg_text.text.split("\n")), track.id)
                 if reg_text is not None else None)
        old_state_bytes = fsio.read_bytes(state_path)
        old_state, corrupt = ((None, None) if old_state_bytes is None or old_state_bytes == cache.state_bytes
                              else read_state(state_path, old_state_bytes))
        meta_text = fsio.read_for_edit(meta_path)
        problems: list[LoadProblem] = []
        meta = (meta_mod.read_metadata(meta_path, meta_text.text, track.id, problems)
                if meta_text is not None else {})
        if old_state_bytes is not None and old_state_bytes == cache.state_bytes:
            state_status = cache.status
            before = [(i, f["description"], f["phase"]) for i, (f, _) in cache.tickets.items()]
        else:
            state_status = old_state.track.status if old_state is not None else None
            before = ([(k.id, k.description, k.phase) for k in old_state.tickets]
                      if old_state is not None else [])
        status_changed = track_status(entry, state_status, meta) != track.status

        plan, plan_bom, plan_before = self._plan_for_edit(plan_path, cache, track.title)
        cache.plan_bytes, cache.plan = None, None      # `plan` is edited below: not the file's
        self._apply_tickets(plan, track, before)
        plan_data = fsio.Text("", plan_bom).encode(plan.text())
        state_data = render_state(track, cache.tickets).encode("utf-8")

        # state.toml first: plan.md is then never ahead of it.
        cache.state_bytes = None
        if corrupt is not None:
            fsio.copy_aside(state_path)
        if old_state_bytes != state_data:
            fsio.atomic_write_bytes(state_path, state_data)
        cache.state_bytes, cache.status = state_data, track.status
        if plan_before != plan_data:
            fsio.atomic_write_bytes(plan_path, plan_data)
        cache.plan_bytes, cache.plan, cache.plan_bom = plan_data, plan, plan_bom

        self._save_spec(spec_path, track, new)
        if meta_text is not None:
            if status_changed or meta.get("updated_at", track.updated_at) != track.updated_at:
                edited = meta_mod.edit_metadata(meta_text.text, track.status if status_changed
                                                else None, track.updated_at)
                if edited != meta_text.text:
                    fsio.atomic_write_bytes(meta_path, meta_text.encode(edited))
        elif new:
            fsio.write_if_absent(meta_path, meta_mod.new_metadata_text(track))
        if new:
            fsio.write_if_absent(folder / "index.md", track_index_text(track.id))
        if entry is not None:
            if status_changed:
                edited = reg_mod.set_marker(reg_text.text, track.id, track.status)
                if edited != reg_text.text:
                    fsio.atomic_write_bytes(self.registry_path, reg_text.encode(edited))
        elif new:
            if reg_text is None and self.registry_path.exists():
                fsio.copy_aside(self.registry_path)     # not UTF-8: kept, then a new registry
            text = reg_mod.append_entry(reg_text.text if reg_text else None, track.id,
                                        track.title, track.status)
            fsio.atomic_write_bytes(self.registry_path,
                                    (reg_text or fsio.Text("")).encode(text))

    def _plan_for_edit(self, path: Path, cache: _SaveCache, title: str
                       ) -> tuple[plan_mod.Plan, bool, bytes | None]:
        """(the plan to edit, its BOM flag, the file's bytes now). The last save's parse is
        reused when the file still holds what it wrote; an undecodable file is copied aside
        and a new plan started."""
        raw = fsio.read_bytes(path)
        if raw is not None and raw == cache.plan_bytes and cache.plan is not None:
            return cache.plan, cache.plan_bom, raw
        text: fsio.Text | None = None
        if raw is not None:
            try:
                text = fsio.decode(raw)
            except UnicodeDecodeError:
                fsio.copy_aside(path)
        if text is None:
            return plan_mod.parse_plan(plan_mod.new_plan_text(title), str(path)), False, raw
        return plan_mod.parse_plan(text.text, str(path)), text.bom, raw

    @staticmethod
    def _apply_tickets(plan: plan_mod.Plan, track: Track, before: list[tuple[str, str, str]]) -> None:
        """Edit `plan` so it says what the tickets say: markers, SHAs of ticked tasks, text the
        person changed, tasks it lacks, and no task whose ticket was removed in the app (one
        state.toml knew, `before`: a task someone added to the file since is never removed).
        Every other character stays."""
        # plan.md's lines say what the tickets said at the last save (`before`): a ticket is
        # matched to its line by that text (in its own phase, as the loader pairs them), so a
        # description edited in the app, however much, rewrites its own line instead of
        # leaving it behind and adding another
        was = {k[0]: k[1] for k in before}
        ids, _ = match_ids(plan.tasks, [(t.id, was.get(t.id, t.description), t.phase)
                                        for t in track.tickets], id_prefix(track.id))
        by_id = {t.id: t for t in track.tickets}
        form = ""                  # the plan's SHA form, worked out when a SHA is first appended
        mark_of = dict(plan_mod.TICKET_MARK)
        held = {m: mark_of.get(st, " ") for m, st in plan_mod.MARK_STATUS.items()}
        reparse = False
        paired: set[str] = set()
        orphans = [task for task, tid in zip(plan.tasks, ids) if tid not in by_id]
        gone_known = [k for k in before if k[0] not in by_id]
        gone: set[int] = set()
        if orphans and gone_known:
            gone_ids = {k[0] for k in gone_known}
            got, _ = match_ids(orphans, gone_known, id_prefix(track.id))
            gone = {task.idx for task, tid in zip(orphans, got) if tid in gone_ids}
        for task, tid in reversed(list(zip(plan.tasks, ids))):
            t = by_id.get(tid)
            if t is None:
                if task.idx in gone:   # removed in the app: its lines go
                    del plan.lines[task.idx:task.end]
                    reparse = True
                continue      # a task no ticket knew of (added to the file since): it stays
            paired.add(tid)
            want = mark_of.get(t.status, " ")
            if want != held.get(task.marker, " "):
                plan_mod.set_marker(plan, task, want)
            if want == "x" and t.commit_sha and not task.sha:
                form = form or plan_mod.sha_form(plan)
                plan_mod.append_sha(plan, task, t.commit_sha, form)
            elif want != "x" and task.sha and not t.commit_sha:
                plan_mod.remove_sha(plan, task)          # its commit was reverted
            if t.description != task.text and plan_mod.set_description(plan, task, t.description,
                                                                         t.depends_on):
                reparse = True
        new = [(phase_label(t.phase), plan_mod.task_lines(t.description, t.status, t.commit_sha,
                                                          deps=t.depends_on))
               for t in track.tickets if t.id not in paired]
        if new:
            if reparse:
                plan.__dict__.update(plan_mod.parse_plan(plan.text()).__dict__)
            plan_mod.insert_tasks(plan, new)
            reparse = True
        if reparse:
            plan.__dict__.update(plan_mod.parse_plan(plan.text()).__dict__)

    def _save_spec(self, path: Path, track: Track, new: bool) -> None:
        text = fsio.read_for_edit(path)
        if text is None:      # absent (written only for a new track), or not UTF-8 (left alone)
            if new and not path.exists():
                fsio.atomic_write_bytes(path, spec_mod.new_spec_text(track).encode("utf-8"))
            return
        spec = spec_mod.parse_spec(text.text)
        changed = spec_mod.edit_spec(spec, track)
        title = one_line(track.title)
        if spec.title and spec.title_idx is not None and title and spec.title != title:
            line = spec.lines[spec.title_idx]
            at = line.rfind(spec.title)
            spec.lines[spec.title_idx] = line[:at] + title + line[at + len(spec.title):]
            changed = True
        if changed:
            fsio.atomic_write_bytes(path, text.encode("\n".join(spec.lines)))

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint_phase(self, track_id: str, phase: str, sha: str) -> bool:
        """Append ` [checkpoint: <sha7>]` to the heading of `phase` (its name or label) in the
        track's plan.md, as the extension does after a phase's manual verification. False if
        it already has one; StoreError if the plan has no such phase or `sha` is not a SHA."""
        check_track_id(track_id)
        path = self.tracks_dir / track_id / "plan.md"
        with self._lock:
            text = fsio.read_for_edit(path)
            if text is None:
                raise StoreError(f"track {track_id}: {path} is missing or not UTF-8 text")
            plan = plan_mod.parse_plan(text.text, str(path))
            ph = plan.phase(phase)
            if ph is None:
                names = ", ".join(repr(p.name) for p in plan.phases) or "none"
                raise StoreError(f"track {track_id}: plan.md has no phase {phase!r} (phases: {names})")
            try:
                changed = plan_mod.append_checkpoint(plan, ph, sha)
            except ValueError as e:
                raise StoreError(f"track {track_id}: {e}") from e
            if changed:
                fsio.atomic_write_bytes(path, text.encode(plan.text()))
            return changed

    def phase_checkpoints(self, track_id: str) -> dict[str, str]:
        """Phase name -> the SHA of its `[checkpoint: sha]` tag ("" if it has none)."""
        check_track_id(track_id)
        path = self.tracks_dir / track_id / "plan.md"
        text = read_text(path, [])
        if text is None:
            raise StoreError(f"track {track_id}: cannot read {path}")
        return {p.name: p.checkpoint for p in plan_mod.parse_plan(text).phases}

    # -- reading tracks ---------------------------------------------------------------------

    def _track_folders(self) -> list[Path]:
        if not self.tracks_dir.exists():
            return []
        try:
            return sorted(p for p in self.tracks_dir.iterdir()
                          if p.is_dir() and not p.name.startswith((".", "_"))
                          and (p / "plan.md").is_file())
        except OSError as e:
            raise StoreError(f"cannot list {self.tracks_dir}: {e}") from e

    def _registry(self, problems: list[LoadProblem]) -> list[reg_mod.RegEntry]:
        text = read_text(self.registry_path, problems, required=False)
        return reg_mod.parse_registry(text.split("\n")) if text is not None else []

    def load_tracks(self) -> tuple[list[Track], list[LoadProblem]]:
        """Every track folder (not _archive/, not conductor/archive/, not one without plan.md),
        with its problems; registry entries whose folder is missing are problems. Never writes."""
        problems: list[LoadProblem] = []
        entries = self._registry(problems)
        folders = self._track_folders()
        tracks: list[Track] = []
        for folder in folders:
            track, probs = load_folder(folder, reg_mod.find_entry(entries, folder.name))
            tracks.append(track)
            problems += probs
        names = {f.name for f in folders}
        for e in entries:
            if e.track_id and not e.archived and e.track_id not in names:
                where = self.tracks_dir / e.track_id
                why = "has no plan.md" if where.is_dir() else "does not exist"
                problems.append(LoadProblem(str(self.registry_path), e.line + 1, (
                    f"track {e.track_id!r} ({e.title}) is listed but {where} {why}; ignored")))
        tracks.sort(key=lambda t: (t.created_at, t.id))
        return tracks, problems

    def load_track(self, track_id: str) -> tuple[Track, list[LoadProblem]]:
        check_track_id(track_id)
        folder = self.tracks_dir / track_id
        if not folder.is_dir():
            raise StoreError(f"no track {track_id}: {folder} does not exist")
        return load_folder(folder, reg_mod.find_entry(self._registry([]), track_id))

    # -- settings ---------------------------------------------------------------------------

    def settings_path(self) -> Path:
        return self.clutch_dir / "config.toml"

    def load_settings(self) -> tuple[Settings, list[str]]:
        """Settings from config.toml; on any problem the file is moved aside and defaults used."""
        return settings_mod.load_settings(self.settings_path())

    def save_settings(self, settings: Settings) -> None:
        with self._lock:
            self._ensure_clutch_dir()
            settings_mod.save_settings(self.settings_path(), settings)
