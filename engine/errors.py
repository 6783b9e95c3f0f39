"""The engine's errors and small pure helpers (track copies, error descriptions, timestamps).

Threads: any. State owned: none (pure functions and exception classes).
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

from ai_client import PlanError, ProviderError
from models import DagError, Track

MAX_EPIC_CHARS = 100_000


class EngineError(Exception):
    """A request the engine refuses, with a message for the user."""


class ApprovalNotFound(KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else "approval not found"


class ApprovalAlreadyResolved(EngineError):
    pass


class BudgetExceeded(Exception):
    pass


class StepStopped(Exception):
    pass


class NoChange(Exception):
    """A worker finished without changing a file: no evidence, so its task is not ticked."""


class ChecksFailed(Exception):
    """A ticket's last attempt failed its checks (Tier 4 has diagnosed it already)."""


_ATOMIC = (str, int, float, bool, type(None))


def _copy_value(v: Any) -> Any:
    if isinstance(v, _ATOMIC):
        return v
    if type(v) is list and all(isinstance(x, _ATOMIC) for x in v):
        return list(v)
    return copy.deepcopy(v)


def copy_track(track: Track, prev: Track | None = None) -> Track:
    """A deep copy of a track for the writer, equal to `model_copy(deep=True)` but cheaper (it
    runs on the loop thread for every write pass): immutable values are shared, lists of them
    copied, anything else deep-copied; a ticket equal to its copy in `prev` (an earlier
    snapshot, never mutated) is not copied again but shared."""
    old = {t.id: t for t in prev.tickets} if prev is not None else {}
    tickets = []
    for t in track.tickets:
        c = old.get(t.id)
        if c is None or c.__dict__ != t.__dict__:
            c = t.__copy__()         # pydantic's shallow copy: its own __dict__ and fields set
            d = c.__dict__
            for k, v in d.items():
                if not isinstance(v, _ATOMIC):
                    d[k] = _copy_value(v)
        tickets.append(c)
    update = {k: _copy_value(v) for k, v in track.__dict__.items()
              if k != "tickets" and not isinstance(v, _ATOMIC)}
    update["tickets"] = tickets
    return track.model_copy(update=update)


def settle(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


def describe(e: BaseException) -> str:
    if isinstance(e, (ProviderError, PlanError, EngineError, BudgetExceeded, DagError)):
        return str(e)
    return f"{type(e).__name__}: {e}"


def short_json(obj: Any, limit: int = 500) -> str:
    s = json.dumps(obj, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit] + "…"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
