"""Every read the GUI makes of the engine's state, as one-line functions: the only module of
the GUI that reaches past the `ConductorEngine` facade's public commands.

At the merge each of these becomes a call of the facade's typed read API
(`engine.stream_text`, `engine.comms_entries`, `engine.comms_count`, `engine.diff_preview`,
`engine.workspace`, ...); until then they use today's internals, here and nowhere else.

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
        return engine.streams.text(stream_id, offset)
    except KeyError:
        return ""


def stream_states(engine: ConductorEngine) -> dict[str, str]:
    """Every stream the engine holds, with its state ("streaming", "done", "failed"...)."""
    return {sid: str(i.get("state", "idle")) for sid, i in engine.streams.info().items()}


def comms_entries(engine: ConductorEngine, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
    return engine.comms.entries(since, until)


def comms_count(engine: ConductorEngine) -> int:
    return len(engine.comms)


def comms_path(engine: ConductorEngine) -> str:
    return str(engine.comms.path or "(in memory)")


def diff_preview(engine: ConductorEngine, tool: str, args: dict[str, Any]) -> str:
    from tools import diff_preview as preview
    return preview(engine.ws, tool, args)


def track_dir(engine: ConductorEngine, track_id: str) -> Path:
    return Path(engine.store.tracks_dir) / track_id


def open_proposal(engine: ConductorEngine) -> tuple[str, list[dict[str, Any]]] | None:
    """The epic and the tracks of a Tier 1 proposal not accepted yet (None when there is none)."""
    if engine.proposal is None:
        return None
    return engine.last_epic, [t.model_dump() for t in engine.proposal.tracks]
