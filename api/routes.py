"""The API's routes: one function per endpoint, each `route(h, **path_params)` with `h` the
request's Handler (api.handler), and `ROUTES`, the table the handler dispatches on.
docs/api.md lists them.

Every route runs on a pool worker thread and calls only the engine's public thread-safe
methods, so an action taken here shows in the GUI as if it had been clicked. No state here.
"""
from __future__ import annotations

import concurrent.futures
import re
import time
from typing import Any

from api.handler import ENGINE_WAIT_S, Handler, Route
from api.sse import get_events
from api.settings_routes import (get_ollama_models, get_provider_settings, get_settings,
                                 put_provider_settings)
from api.validation import HttpError, field, models_of
from models import Approved, Denied, Ticket, TrackProposal

__all__ = ("ApiHandler", "ROUTES")


# -- read ------------------------------------------------------------------------------------
def get_status(h: Handler) -> None:
    h.send_json(200, h.api.status())


def get_state(h: Handler) -> None:
    """`?session=current`: usage of the running session only; by default (`all`) of every
    session of the workspace."""
    scope = (h.query.get("session") or ["all"])[-1] or "all"
    if scope not in ("all", "current"):
        raise HttpError(400, f"session must be 'all' or 'current', not {scope!r}")
    h.send_json(200, h.api.state(scope))


def get_sessions(h: Handler) -> None:
    """Every session of the workspace, from the comms logs on disk (cached by size/mtime)."""
    h.send_json(200, {"sessions": h.engine.sessions()})


def get_approvals(h: Handler) -> None:
    h.send_json(200, {"pending_approvals": [r.model_dump(mode="json")
                                            for r in h.engine.pending_approvals()]})


def get_stream(h: Handler, id: str) -> None:
    raw = (h.query.get("offset") or ["0"])[-1]
    try:
        offset = int(raw)
        if offset < 0:
            raise ValueError
    except ValueError:
        raise HttpError(400, f"offset must be a non-negative integer, not {raw!r}") from None
    try:
        text = h.engine.stream_text(id, offset)
    except KeyError:
        raise HttpError(404, f"no stream {id!r}") from None
    except (OSError, UnicodeDecodeError) as e:   # the session's streams.txt, gone or damaged
        raise HttpError(500, f"cannot read stream {id!r} back from the session's "
                             f"streams file: {e}") from None
    state = h.engine.stream_info().get(id, {}).get("state", "idle")
    h.send_json(200, {"stream_id": id, "offset": offset, "text": text,
                      "next_offset": offset + len(text), "state": state})


# -- plan ------------------------------------------------------------------------------------
def post_epic(h: Handler) -> None:
    body = h.body()
    epic = field(body, "epic", str)
    if not epic.strip():
        raise HttpError(400, "the epic is empty: describe what you want built")
    with h.engine_errors(refusal=400):
        fut = h.engine.plan_epic(epic)
    h.api.track_job("epic", fut)
    h.send_json(202, {"status": "planning"})


def post_accept(h: Handler) -> None:
    body = h.body()
    props = models_of(field(body, "tracks", list), TrackProposal, "tracks")
    if not props:
        raise HttpError(400, "no tracks to accept: send at least one")
    tracks = h.call_engine(h.engine.accept_tracks, props)
    h.send_json(201, {"tracks": [t.model_dump(mode="json") for t in tracks]})


def patch_track(h: Handler, id: str) -> None:
    h.require_track(id)
    body = h.body()
    title = field(body, "title", str, required=False)
    goal = field(body, "goal", str, required=False)
    criteria = field(body, "acceptance_criteria", list, required=False)
    if criteria is not None and not all(isinstance(c, str) for c in criteria):
        raise HttpError(400, "field 'acceptance_criteria' must be an array of strings")
    if title is None and goal is None and criteria is None:
        raise HttpError(400, "nothing to change: send title, goal or acceptance_criteria")
    with h.engine_errors():            # refused at once (e.g. a running track): 409
        out = h.engine.update_track(id, title=title, goal=goal, acceptance_criteria=criteria)
    with h.engine_errors(refusal=400):  # refused by the edit itself: 400
        track = (out.result(timeout=ENGINE_WAIT_S)
                 if isinstance(out, concurrent.futures.Future) else out)
    h.send_json(200, {"track": track.model_dump(mode="json")})


def put_verify(h: Handler, id: str) -> None:
    """The track's own verify command: {"command": "..."} ("" = none for this track), or
    {"command": null} to use the setting's; with the project's suggestion in the answer."""
    h.require_track(id)
    body = h.body()
    if "command" not in body:
        raise HttpError(400, "missing field 'command' (text, or null for the setting's)")
    command = body["command"]
    if command is not None and not isinstance(command, str):
        raise HttpError(400, "field 'command' must be text or null")
    track = h.call_engine(h.engine.set_verify_command, id, command)
    suggestion, where = h.engine.verify_suggestion()
    h.send_json(200, {"track_id": id, "verify_command": track.verify_command,
                      "suggested": {"command": suggestion, "from": where}})


def post_git_init(h: Handler) -> None:
    """Outside git: `git init` and a first commit, so tickets get worktrees."""
    h.optional_body()
    sha = h.call_engine(h.engine.init_git)
    h.send_json(200, {"status": "initialized", "commit": sha, **h.engine.git_setup()})


def put_tickets(h: Handler, id: str) -> None:
    h.require_track(id)
    body = h.body()
    tickets = models_of(field(body, "tickets", list), Ticket, "tickets")
    track = h.call_engine(h.engine.set_tickets, id, tickets)
    h.send_json(200, {"track": track.model_dump(mode="json")})


# -- run -------------------------------------------------------------------------------------
def post_track(h: Handler, id: str, action: str) -> None:
    h.require_track(id)
    h.optional_body()
    e = h.engine
    with h.engine_errors():
        if action == "plan":
            h.api.track_job(f"plan:{id}", e.plan_track(id))
            h.send_json(202, {"status": "planning", "track_id": id})
        elif action == "start":
            h.api.track_job(f"run:{id}", e.start_track(id))
            h.send_json(202, {"status": "started", "track_id": id})
        elif action == "pause":
            h.call_engine(e.pause_track, id)
            h.send_json(200, {"status": "pausing", "track_id": id})
        else:
            h.api.track_job(f"run:{id}", e.resume_track(id))
            h.send_json(202, {"status": "resumed", "track_id": id})


def post_ticket(h: Handler, id: str, action: str) -> None:
    h.require_ticket(id)
    body = h.optional_body()
    reason = field(body, "reason", str, required=False)
    e = h.engine
    if action == "retry":
        _retry(h, id)
        h.send_json(202, {"status": "retrying", "ticket_id": id})
        return
    fn = e.skip_ticket if action == "skip" else e.cancel_ticket
    if reason:
        h.call_engine(fn, id, reason)
    else:
        h.call_engine(fn, id)
    h.send_json(200, {"status": "skipped" if action == "skip" else "cancelling",
                      "ticket_id": id})


def post_revert(h: Handler, id: str) -> None:
    """Undo a completed ticket's commit (`git revert`); the ticket goes back to todo."""
    h.require_ticket(id)
    h.optional_body()
    sha = h.call_engine(h.engine.revert_ticket, id)
    h.send_json(200, {"status": "reverted", "ticket_id": id, "revert_sha": sha})


def get_diff(h: Handler, id: str) -> None:
    """One ticket's change: {ticket_id, track_id, commit, branch, files, diff}."""
    h.require_ticket(id)
    h.send_json(200, h.call_engine(h.engine.ticket_diff, id))


def _retry(h: Handler, ticket_id: str) -> None:
    """Retry, whichever way the engine answers: at once with the track's run (or None), or
    with a Future that gives it (or that is the run itself). The request waits until the
    retry has taken effect (its count went up and its track runs) or been refused, never for
    the run to end."""
    before = _retry_count(h, ticket_id)
    track_id = _track_of(h, ticket_id)
    with h.engine_errors():
        out = h.engine.retry_ticket(ticket_id)
        job = out
        if isinstance(out, concurrent.futures.Future):
            deadline = time.monotonic() + ENGINE_WAIT_S
            while not out.done() and not (_retry_count(h, ticket_id) > before
                                          and h.engine.is_running(track_id)):
                if time.monotonic() >= deadline:
                    raise concurrent.futures.TimeoutError()
                concurrent.futures.wait([out], timeout=0.05)
            if out.done():
                res = out.result()               # a refusal raises here: 409
                job = res if isinstance(res, concurrent.futures.Future) else out
    if isinstance(job, concurrent.futures.Future):
        h.api.track_job(f"run:{track_id}", job)


def _retry_count(h: Handler, ticket_id: str) -> int:
    for t in h.engine.tracks():
        for k in t.tickets:
            if k.id == ticket_id:
                return k.retry_count
    return -1


def _track_of(h: Handler, ticket_id: str) -> str:
    for t in h.engine.tracks():
        if any(k.id == ticket_id for k in t.tickets):
            return t.id
    return ""


# -- approvals -------------------------------------------------------------------------------
def post_approval(h: Handler, id: str) -> None:
    """Approve (with the person's edits, checked against the request's typed payload by the
    engine: a bad edit is a 400 naming the field) or deny."""
    body = h.body()
    approved = field(body, "approved", bool)
    payload: dict[str, Any] | None = field(body, "payload", dict, required=False)
    reason = field(body, "reason", str, required=False, default="")
    decision = (Approved(edits=payload, reason=reason, source="api") if approved
                else Denied(reason=reason, source="api"))
    h.call_engine(h.engine.resolve, id, decision)
    h.send_json(200, {"status": "resolved", "approval_id": id, "approved": approved})


ROUTES: tuple[Route, ...] = (
    ("GET", re.compile(r"/status"), get_status),
    ("GET", re.compile(r"/state"), get_state),
    ("GET", re.compile(r"/sessions"), get_sessions),
    ("GET", re.compile(r"/events"), get_events),
    ("GET", re.compile(r"/approvals"), get_approvals),
    ("GET", re.compile(r"/streams/(?P<id>[^/]+)"), get_stream),
    ("POST", re.compile(r"/epic"), post_epic),
    ("POST", re.compile(r"/tracks/accept"), post_accept),
    ("PATCH", re.compile(r"/tracks/(?P<id>[^/]+)"), patch_track),
    ("PUT", re.compile(r"/tracks/(?P<id>[^/]+)/tickets"), put_tickets),
    ("PUT", re.compile(r"/tracks/(?P<id>[^/]+)/verify"), put_verify),
    ("POST", re.compile(r"/git/init"), post_git_init),
    ("POST", re.compile(r"/tracks/(?P<id>[^/]+)/(?P<action>plan|start|pause|resume)"), post_track),
    ("POST", re.compile(r"/tickets/(?P<id>[^/]+)/(?P<action>retry|skip|cancel)"), post_ticket),
    ("POST", re.compile(r"/tickets/(?P<id>[^/]+)/revert"), post_revert),
    ("GET", re.compile(r"/tickets/(?P<id>[^/]+)/diff"), get_diff),
    ("POST", re.compile(r"/approvals/(?P<id>[^/]+)"), post_approval),
    ("GET", re.compile(r"/settings"), get_settings),
    ("GET", re.compile(r"/settings/providers"), get_provider_settings),
    ("PUT", re.compile(r"/settings/providers"), put_provider_settings),
    ("GET", re.compile(r"/providers/ollama/models"), get_ollama_models),
)


class ApiHandler(Handler):
    routes = ROUTES
