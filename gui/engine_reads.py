"""Every read the GUI makes of the engine's state, through the `ConductorEngine` facade's
typed read API (`stream_text`, `stream_info`, `comms_entries`, `comms_count`, `comms_path`,
`diff_preview`, `track_dir`, `current_proposal`, `workspace`): the GUI never reaches into the
engine's parts. Here the reads are shaped the way the panels use them.

Thread: any (the engine's parts they read are thread-safe); the GUI calls them on the GUI
thread, except `diff_preview`, which reads files and runs on the GUI's background pool.
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
