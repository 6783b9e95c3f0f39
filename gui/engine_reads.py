"""Every read the GUI makes of the engine's state, through the `ConductorEngine` facade's
typed read API (`stream_text`, `stream_info`, `comms_entries`, `comms_count`, `comms_path`,
`diff_preview`, `track_dir`, `current_proposal`, `workspace`, `ticket_diff`, `git_setup`,
`verify_suggestion`): the GUI never reaches into the engine's parts. Here the reads are shaped
the way the panels use them.

Thread: any (the engine's parts they read are thread-safe); the GUI calls them on the GUI
thread, except `diff_preview`, `ticket_reads`, `git_setup` and `verify_suggestion`, which read
files or run git and run on the GUI's background pool.
State: none.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multi_agent_conductor import ConductorEngine


def workspace(engine: ConductorEngine) -> Path:
    return Path(engine.workspace)


def stream_text(engine: ConductorEngine, stream_id: str, offset: int = 0) -> str:
    """The stream's text from `offset` ("" for a stream the engine does not know)."""
    try:
        return engine.stream_text(stream_id, offset)
    except KeyError:
        return ""


def stream_states(engine: ConductorEngine) -> dict[str, str]:
    """Every stream the engine holds, with its state ("streaming", "done", "failed"...)."""
    return {sid: str(i.get("state", "idle")) for sid, i in engine.stream_info().items()}


def comms_entries(engine: ConductorEngine, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
    return engine.comms_entries(since, until)


def comms_count(engine: ConductorEngine) -> int:
    return engine.comms_count()


def comms_path(engine: ConductorEngine) -> str:
    return str(engine.comms_path() or "(in memory)")


def diff_preview(engine: ConductorEngine, tool: str, args: dict[str, Any],
                 ticket_id: str = "") -> str:
    return engine.diff_preview(tool, args, ticket_id)


def track_dir(engine: ConductorEngine, track_id: str) -> Path:
    return engine.track_dir(track_id)


def open_proposal(engine: ConductorEngine) -> tuple[str, list[dict[str, Any]]] | None:
    """The epic and the tracks of a Tier 1 proposal not accepted yet (None when there is none)."""
    current = engine.current_proposal()
    if current is None:
        return None
    epic, plan = current
    return epic, [t.model_dump() for t in plan.tracks]


def ticket_reads(engine: ConductorEngine, ticket_id: str) -> dict[str, Any]:
    """A ticket's diff (engine.ticket_diff: files, diff, commit, branch) and what each of its
    attempts cost this session, from the comms log: {"attempt_costs": {attempt: usd},
    "qa_cost": usd}. Attempt 0 is a conflict's repair worker. Runs git: background pool."""
    out = dict(engine.ticket_diff(ticket_id))
    costs: dict[int, float] = {}
    qa = 0.0
    attempt = 1
    for e in engine.comms_entries(0):
        if e.get("ticket_id") != ticket_id:
            continue
        data = e.get("data") if isinstance(e.get("data"), dict) else {}
        if e.get("kind") == "spawn" and isinstance(data.get("attempt"), int):
            attempt = data["attempt"]
        u = e.get("usage")
        cost = u.get("cost_usd") if isinstance(u, dict) else None
        if not isinstance(cost, (int, float)) or not cost:
            continue
        if e.get("tier") == "Tier 4":
            qa += float(cost)
        else:
            costs[attempt] = costs.get(attempt, 0.0) + float(cost)
    out["attempt_costs"] = costs
    out["qa_cost"] = qa
    return out


def git_setup(engine: ConductorEngine) -> dict[str, Any]:
    return engine.git_setup()


def verify_suggestion(engine: ConductorEngine) -> tuple[str, str]:
    return engine.verify_suggestion()
