"""The store layer's door: `conductor/` on disk in the Gemini CLI Conductor extension's format,
and Clutch's settings. The code lives in the `store/` package; this module keeps the layer's
public face (every name other layers, tests and bench import from here).

What Clutch reads, and what it may change, is in README.md's Conductor section and in the
docstrings of store.plan, store.registry, store.metadata and store.spec. In short: files
someone else wrote are edited in place, line by line (task markers, a SHA appended to a ticked
task, `[checkpoint: sha]` on a phase heading, the registry marker, metadata.json's status and
updated_at); a track Clutch creates is written in the extension's templates; what the format
has no place for lives in state.toml beside plan.md.

Runs on the caller's thread (see store.facade); owns no state of its own.
"""
from __future__ import annotations

from store.errors import LoadProblem, StoreError, TrackExistsError
from store.facade import ConductorStore
from store.lock import WorkspaceBusy, WorkspaceLock
from store.names import DEFAULT_PHASE
from store.registry import REGISTRY_HEADER
from store.state import STATE_FORMAT
from store.state import ticket_dump as _ticket_dump
from store.state import toml_ticket as _toml_ticket

__all__ = ("StoreError", "TrackExistsError", "LoadProblem", "ConductorStore", "DEFAULT_PHASE",
           "REGISTRY_HEADER", "STATE_FORMAT", "_ticket_dump", "_toml_ticket", "WorkspaceLock",
           "WorkspaceBusy")
