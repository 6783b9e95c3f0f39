"""One track folder -> a Track: plan.md, spec.md, metadata.json and the registry entry (the
Conductor files) with state.toml (Clutch's own) for what they cannot hold.

Which source wins:
- status: the registry marker (`[ ]` new, `[~]` in progress, `[x]` done) is the live status;
  state.toml's finer status (paused, failed, ...) is used when it agrees with the marker; a
  track with no registry entry takes state.toml's, else metadata.json's, else new;
- tickets: plan.md says which tasks exist, their order, text, marker and SHA; state.toml adds
  what the format cannot hold (dependencies, retries, failures, ...). A task ticked in plan.md,
  or completed in state.toml, is completed (state.toml is written first, so either may be newer);
- title, goal, criteria: spec.md (then plan.md's title, state.toml, the registry description).

Runs on the caller's thread; owns no state. Nothing here raises on bad content: each problem
becomes a LoadProblem naming the file (and line) and the rest loads.
"""
from __future__ import annotations

from pathlib import Path

from models import Ticket, Track
from store.errors import LoadProblem
from store.fsio import decode
from store.metadata import read_metadata
from store.names import date_from_track_id, id_prefix, one_line, phase_label
from store.plan import TICKET_MARK, Plan, parse_plan
from store.registry import REGISTRY_MARK, RegEntry, status_of
from store.spec import parse_spec
from store.state import StateFile, read_state
from store.tickets import match_ids, plan_order_deps

_TRACK_STATUSES = frozenset({"new", "planned", "in_progress", "paused", "completed", "failed",
                             "cancelled", "needs_attention"})


def read_text(path: Path, problems: list[LoadProblem], required: bool = True) -> str | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            problems.append(LoadProblem(str(path), None, "missing"))
        return None
    except OSError as e:
        problems.append(LoadProblem(str(path), None, f"cannot read: {e.strerror or e}"))
        return None
    try:
        return decode(raw).text
    except UnicodeDecodeError as e:
        problems.append(LoadProblem(str(path), None, (
            f"not UTF-8 text ({e.reason} at byte {e.start}); ignored (a copy is kept as "
            f"{path.name}.bad-<time> before it is next overwritten)")))
        return None


def track_status(entry: RegEntry | None, state_status: str | None, meta: dict[str, str]) -> str:
    """The registry marker's status; state.toml's finer one when it agrees with the marker."""
    if entry is not None:
        reg = status_of(entry.marker)
        if state_status is not None:
            mark = "x" if entry.marker == "X" else (entry.marker or " ")
            if REGISTRY_MARK.get(state_status, "~") == mark:
                return state_status
        return reg
    if state_status is not None:
        return state_status
    st = meta.get("status", "new")
    return st if st in _TRACK_STATUSES else "new"


def merge_tickets(track_id: str, plan: Plan | None, state: StateFile | None, plan_path: Path,
                  state_path: Path, problems: list[LoadProblem]) -> list[Ticket]:
    tasks = plan.tasks if plan else []
    known = [(t.id, t.description, t.phase) for t in state.tickets] if state else []
    ids, dups = match_ids(tasks, known, id_prefix(track_id))
    for i, dup in dups:
        problems.append(LoadProblem(str(plan_path), tasks[i].line, (
            f"duplicate ticket id {dup}; this one is read as {ids[i]}")))
    by_id: dict[str, Ticket] = {}
    for t in (state.tickets if state else []):
        if t.id in by_id:
            problems.append(LoadProblem(str(state_path), None,
                                        f"ticket {t.id} appears twice; the first entry is used"))
            continue
        by_id[t.id] = t
    out: list[Ticket] = []
    used: set[str] = set()
    for task, tid, default in zip(tasks, ids, plan_order_deps(ids)):
        st = by_id.get(tid)
        if st is None:
            out.append(Ticket(id=tid, description=task.text, status=task.status,
                              depends_on=task.deps if task.deps is not None else default,
                              commit_sha=task.sha, phase=task.phase, checkpoint=task.checkpoint))
            continue
        used.add(tid)
        if TICKET_MARK.get(st.status, " ") == ("x" if task.marker == "X" else task.marker):
            status = st.status
        elif task.status == "completed" or st.status == "completed":
            status = "completed"
        else:
            status = st.status
        out.append(st.model_copy(deep=True, update={
            "description": task.text,
            "commit_sha": st.commit_sha or task.sha,
            "phase": st.phase if phase_label(st.phase) == phase_label(task.phase) else task.phase,
            "status": status,
            "checkpoint": st.checkpoint or task.checkpoint,
        }))
    for tid, st in by_id.items():
        if tid not in used:
            problems.append(LoadProblem(str(state_path), None, (
                f"ticket {tid} is in state.toml but not in plan.md; kept (it is added to "
                f"plan.md on the next save)")))
            out.append(st.model_copy(deep=True))
    return out


def load_folder(folder: Path, entry: RegEntry | None) -> tuple[Track, list[LoadProblem]]:
    tid = folder.name
    problems: list[LoadProblem] = []
    plan_path, spec_path = folder / "plan.md", folder / "spec.md"
    meta_path, state_path = folder / "metadata.json", folder / "state.toml"

    meta_text = read_text(meta_path, problems, required=False)
    meta = read_metadata(meta_path, meta_text, tid, problems) if meta_text is not None else {}
    spec_text = read_text(spec_path, problems, required=False)
    plan_text = read_text(plan_path, problems)
    spec = parse_spec(spec_text) if spec_text is not None else None
    plan = parse_plan(plan_text, str(plan_path)) if plan_text is not None else None
    if plan is not None:
        problems += plan.problems
    state, state_problem = read_state(state_path)
    if state_problem is not None:
        problems.append(state_problem)
    if state is not None and state.track.id and state.track.id != tid:
        problems.append(LoadProblem(str(state_path), None, (
            f"track id {state.track.id!r} does not match the folder name {tid!r}; "
            f"the folder name is used")))
    if entry is None and state is None and "status" in meta and meta["status"] not in _TRACK_STATUSES:
        problems.append(LoadProblem(str(meta_path), None, (
            f"unknown status {meta['status']!r} (expected new, in_progress, completed or "
            f"cancelled); read as new")))

    title = ((spec.title if spec else None) or (plan.title if plan else None)
             or (state.track.title if state else "") or (entry.title if entry else "")
             or one_line(meta.get("description", "")) or tid)
    spec_goal = spec.goal if spec else None
    spec_criteria = spec.criteria if spec else None
    goal = spec_goal if spec_goal is not None else (state.track.goal if state else "")
    criteria = (spec_criteria if spec_criteria is not None
                else list(state.track.acceptance_criteria) if state else [])
    tickets = merge_tickets(tid, plan, state, plan_path, state_path, problems)
    status = "needs_attention" if state_problem is not None else track_status(
        entry, state.track.status if state else None, meta)
    created = (meta.get("created_at") or (state.track.created_at if state else "")
               or date_from_track_id(tid))
    updated = meta.get("updated_at") or (state.track.updated_at if state else "") or created
    track = Track(
        id=tid, title=title, goal=goal, acceptance_criteria=criteria, tickets=tickets,
        status=status, type=meta.get("type") or (state.track.type if state else "") or "feature",
        created_at=created, updated_at=updated, problems=[str(p) for p in problems],
        branch=state.track.branch if state else "",
        merged_into=state.track.merged_into if state else "",
        verify_command=state.track.verify_command if state else None,
    )
    return track, problems
