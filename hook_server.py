"""The loopback HTTP API: automation and end-to-end tests drive the same engine the GUI does.

    server = start_for_engine(engine)        # the app with --api
    serve_forever(workspace, settings)       # `clutch serve`: the engine with no window

The server binds to 127.0.0.1 only and requires `Authorization: Bearer <token>`; the token is
generated per run and written, with the port, to `<workspace>/.clutch/api.json` (mode 0600),
which is removed on stop. Every endpoint calls the engine's public thread-safe methods, so an
action taken here shows in the GUI exactly as if it had been clicked, and the other way round.
Errors are JSON `{"error": "<message>"}`: 400 malformed, 401 no or wrong token, 404 unknown id
or endpoint, 405 wrong method, 409 the engine refused (its state does not allow it), 413 body
too large. A stack trace never leaves the process; it goes to the log.

`ApiClient` is the stdlib-only client (urllib, http.client) with polling waits. docs/api.md
lists the endpoints.
"""
from __future__ import annotations

import concurrent.futures
import hmac
import http.client
import json
import logging
import os
import re
import secrets
import select
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from events import ErrorEvent, Event, Inbox, LogEvent
from models import Approved, DagError, Denied, Settings, Ticket, TrackProposal
from multi_agent_conductor import (ApprovalAlreadyResolved, ApprovalNotFound, ConductorEngine,
                                   EngineError)

log = logging.getLogger("clutch.api")

HOST = "127.0.0.1"
MAX_BODY = 10 * 1024 * 1024
HEARTBEAT_S = 10.0
API_FILE = "api.json"


def api_file_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / ".clutch" / API_FILE


class HttpError(Exception):
    """An error response: status and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# =============================================================================================
# request validation
# =============================================================================================

def _field(body: dict[str, Any], name: str, types: type | tuple[type, ...], *,
           required: bool = True, default: Any = None, what: str = "") -> Any:
    if name not in body or (not required and body[name] is None):
        if required:
            raise HttpError(400, f"missing field {name!r}")
        return default
    v = body[name]
    # bool is an int in Python; a JSON true is never a number here, nor 1 a boolean
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    else:
        ok = isinstance(v, types)
    if not ok:
        raise HttpError(400, f"field {name!r} must be {what or _type_name(types)}, "
                             f"not {_json_type(v)}")
    return v


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", dict: "an object",
             list: "an array"}
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in ts)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number",
            dict: "an object", list: "an array"}.get(type(v), type(v).__name__)


def _validation_message(e: Exception) -> str:
    """A pydantic ValidationError in one line, without its URL footers."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        parts = []
        for err in errors():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
        return "; ".join(parts)
    return str(e)


def _models(items: Any, model: type, field_name: str) -> list[Any]:
    if not isinstance(items, list):
        raise HttpError(400, f"field {field_name!r} must be an array, not {_json_type(items)}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise HttpError(400, f"{field_name}[{i}] must be an object, not {_json_type(item)}")
        try:
            out.append(model.model_validate(item))
        except ValueError as e:   # pydantic's ValidationError is a ValueError
            raise HttpError(400, f"{field_name}[{i}] is invalid: {_validation_message(e)}") from None
    return out


# =============================================================================================
# the server
# =============================================================================================

class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: "ApiServer"


class ApiServer:
    """The API over one running engine. Use `start_for_engine`; `.stop()` when done."""

    def __init__(self, engine: ConductorEngine, port: int | None = None,
                 heartbeat_s: float = HEARTBEAT_S):
        self.engine = engine
        self.token = secrets.token_urlsafe(32)
        self.heartbeat_s = heartbeat_s
        self.api_file = api_file_path(engine.workspace)
        self._stopping = threading.Event()
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._sse_lock = threading.Lock()
        self._sse: set[int] = set()
        self._jobs_lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        if port is None:
            port = engine.settings.api_port
        self.httpd = _HTTPServer((HOST, port), _Handler)
        self.httpd.api = self
        self.port: int = self.httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name="clutch-api",
                                        daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ApiServer":
        try:
            self._write_api_file()
        except OSError:
            self.httpd.server_close()
            raise
        self._thread.start()
        log.info("automation API at %s (token in %s)", self.url, self.api_file)
        return self

    def _write_api_file(self) -> None:
        self.api_file.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"port": self.port, "token": self.token, "pid": os.getpid(),
                           "url": self.url}).encode()
        tmp = self.api_file.with_name(f".{API_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.api_file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _remove_api_file(self) -> None:
        """Remove api.json if it is still ours (another server on this workspace may have
        replaced it)."""
        try:
            current = json.loads(self.api_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(current, dict) and current.get("token") == self.token:
            self.api_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop serving: end event streams, close the socket, remove api.json. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with self._sse_lock:
                if not self._sse:
                    break
            time.sleep(0.02)
        self._remove_api_file()
        log.info("automation API stopped")

    close = stop

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def __enter__(self) -> "ApiServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- background work started over the API ------------------------------------------------
    def track_job(self, key: str, fut: concurrent.futures.Future[Any] | None) -> None:
        """Remember a started operation so /state can say whether it is running, done or failed."""
        if fut is None:
            return
        with self._jobs_lock:
            self._jobs[key] = {"state": "running", "error": "", "future": fut}

        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():
                state, err = "cancelled", ""
            elif f.exception() is not None:
                state, err = "failed", _describe(f.exception())  # type: ignore[arg-type]
            else:
                state, err = "done", ""
            with self._jobs_lock:
                if self._jobs.get(key, {}).get("future") is f:   # not replaced by a newer job
                    self._jobs[key] = {"state": state, "error": err, "future": f}
        fut.add_done_callback(done)

    def jobs(self) -> dict[str, dict[str, Any]]:
        with self._jobs_lock:
            return {k: {"state": v["state"], "error": v["error"]} for k, v in self._jobs.items()}

    # -- views -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        e = self.engine
        return {"ok": True, "workspace": str(e.workspace), "provider": e.settings.provider,
                "workers": e.workers(), "pending_approvals": len(e.pending_approvals()),
                "session_dir": str(e.session_dir)}

    def state(self) -> dict[str, Any]:
        e = self.engine
        tracks = []
        for t in e.tracks():
            d = t.model_dump(mode="json")
            done, total = t.progress()
            d["progress"] = {"done": done, "total": total}
            d["running"] = e.is_running(t.id)
            d["paused"] = e.is_paused(t.id)
            tracks.append(d)
        usage = {key: {k: u.summary() for k, u in sorted(e.usage(key).items())}
                 for key in ("tier", "track", "ticket")}
        usage["total"] = e.comms.total().summary()
        proposal = e.proposal
        return {
            "workspace": str(e.workspace),
            "session_dir": str(e.session_dir),
            "provider": e.settings.provider,
            "tracks": tracks,
            "streams": {sid: dict(info) for sid, info in sorted(e.streams.info().items())},
            "usage": usage,
            "pending_approvals": [r.model_dump(mode="json") for r in e.pending_approvals()],
            "proposal": None if proposal is None else {
                "epic": e.last_epic, "tracks": [p.model_dump(mode="json") for p in proposal.tracks]},
            "workers": e.workers(),
            "jobs": self.jobs(),
        }

    def sse_register(self, sid: int) -> None:
        with self._sse_lock:
            self._sse.add(sid)

    def sse_unregister(self, sid: int) -> None:
        with self._sse_lock:
            self._sse.discard(sid)

    @property
    def sse_clients(self) -> int:
        """How many /events streams are open."""
        with self._sse_lock:
            return len(self._sse)


def _describe(e: BaseException) -> str:
    if isinstance(e, (EngineError, DagError, ApprovalNotFound)):
        return str(e)
    return f"{type(e).__name__}: {e}"


# =============================================================================================
# routing
# =============================================================================================

Route = tuple[str, "re.Pattern[str]", str]

_ROUTES: list[Route] = [
    ("GET", re.compile(r"/status"), "get_status"),
    ("GET", re.compile(r"/state"), "get_state"),
    ("GET", re.compile(r"/events"), "get_events"),
    ("GET", re.compile(r"/approvals"), "get_approvals"),
    ("GET", re.compile(r"/streams/(?P<id>[^/]+)"), "get_stream"),
    ("POST", re.compile(r"/epic"), "post_epic"),
    ("POST", re.compile(r"/tracks/accept"), "post_accept"),
    ("PATCH", re.compile(r"/tracks/(?P<id>[^/]+)"), "patch_track"),
    ("PUT", re.compile(r"/tracks/(?P<id>[^/]+)/tickets"), "put_tickets"),
    ("POST", re.compile(r"/tracks/(?P<id>[^/]+)/(?P<action>plan|start|pause|resume)"), "post_track"),
    ("POST", re.compile(r"/tickets/(?P<id>[^/]+)/(?P<action>retry|skip|cancel)"), "post_ticket"),
    ("POST", re.compile(r"/approvals/(?P<id>[^/]+)"), "post_approval"),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "clutch-api"
    sys_version = ""
    timeout = 60          # an idle keep-alive connection is closed after a minute
    server: _HTTPServer

    # -- plumbing ----------------------------------------------------------------------------
    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    @property
    def api(self) -> ApiServer:
        return self.server.api

    @property
    def engine(self) -> ConductorEngine:
        return self.server.api.engine

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            split = urllib.parse.urlsplit(self.path)
            path = split.path.rstrip("/") or "/"
            self.query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
            if not self._authorized():
                self._drain_body()
                raise HttpError(401, "missing or wrong bearer token (see .clutch/api.json)")
            handler, params, allowed = None, {}, set()
            for m, pattern, name in _ROUTES:
                match = pattern.fullmatch(path)
                if match is None:
                    continue
                if m != method:
                    allowed.add(m)
                    continue
                handler = getattr(self, name)
                params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                break
            if handler is None:
                self._drain_body()
                if allowed:
                    raise HttpError(405, f"{method} is not allowed on {path}; use "
                                         f"{' or '.join(sorted(allowed))}")
                raise HttpError(404, f"no such endpoint: {method} {path}")
            handler(**params)
        except HttpError as e:
            self._send_json(e.status, {"error": e.message},
                            extra={"WWW-Authenticate": "Bearer"} if e.status == 401 else None)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:   # never a stack trace in a response; the log keeps it
            log.exception("API %s %s failed", method, self.path)
            try:
                self._send_json(500, {"error": f"internal error: {_describe(e)}"})
            except OSError:
                self.close_connection = True

    def _authorized(self) -> bool:
        got = (self.headers.get("Authorization") or "").encode("utf-8", "replace")
        want = f"Bearer {self.api.token}".encode()
        return hmac.compare_digest(got, want)

    def _drain_body(self) -> None:
        """Read and drop a body we will not use, so a keep-alive connection stays in sync."""
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if 0 < n <= 1024 * 1024:
            self.rfile.read(n)
        elif n != 0 or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def _body(self) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HttpError(400, "chunked request bodies are not supported; send Content-Length")
        raw_len = self.headers.get("Content-Length") or "0"
        try:
            n = int(raw_len)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise HttpError(400, f"bad Content-Length {raw_len!r}") from None
        if n > MAX_BODY:
            self.close_connection = True
            raise HttpError(413, f"the body is {n:,} bytes; the limit is {MAX_BODY:,}")
        raw = self.rfile.read(n) if n else b""
        if not raw.strip():
            raise HttpError(400, "the request needs a JSON object body")
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise HttpError(400, f"the body is not UTF-8 (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise HttpError(400, f"the body is not valid JSON: {e.msg} at line {e.lineno} "
                                 f"column {e.colno}") from None
        if not isinstance(body, dict):
            raise HttpError(400, f"the body must be a JSON object, not {_json_type(body)}")
        return body

    def _optional_body(self) -> dict[str, Any]:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 1   # let _body report it
        if n == 0 and not self.headers.get("Transfer-Encoding"):
            return {}
        return self._body()

    def _send_json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    # -- engine calls ------------------------------------------------------------------------
    def _engine(self, fn: Callable[..., Any], *args: Any, refusal: int = 409, **kw: Any) -> Any:
        """Call an engine method, mapping its refusals to HTTP errors with its message."""
        try:
            return fn(*args, **kw)
        except ApprovalNotFound as e:
            raise HttpError(404, str(e)) from None
        except DagError as e:
            raise HttpError(400, str(e)) from None
        except EngineError as e:   # includes ApprovalAlreadyResolved
            raise HttpError(refusal, str(e)) from None
        except concurrent.futures.TimeoutError:
            raise HttpError(503, "the engine did not answer in time; try again") from None

    def _require_track(self, track_id: str) -> None:
        if track_id not in {t.id for t in self.engine.tracks()}:
            raise HttpError(404, f"no track {track_id!r}")

    def _require_ticket(self, ticket_id: str) -> None:
        if not any(k.id == ticket_id for t in self.engine.tracks() for k in t.tickets):
            raise HttpError(404, f"no ticket {ticket_id!r}")

    # -- read --------------------------------------------------------------------------------
    def get_status(self) -> None:
        self._send_json(200, self.api.status())

    def get_state(self) -> None:
        self._send_json(200, self.api.state())

    def get_approvals(self) -> None:
        self._send_json(200, {"pending_approvals": [r.model_dump(mode="json")
                                                    for r in self.engine.pending_approvals()]})

    def get_stream(self, id: str) -> None:
        raw = (self.query.get("offset") or ["0"])[-1]
        try:
            offset = int(raw)
            if offset < 0:
                raise ValueError
        except ValueError:
            raise HttpError(400, f"offset must be a non-negative integer, not {raw!r}") from None
        try:
            text = self.engine.streams.text(id, offset)
        except KeyError:
            raise HttpError(404, f"no stream {id!r}") from None
        except (OSError, UnicodeDecodeError) as e:   # the session's streams.txt, gone or damaged
            raise HttpError(500, f"cannot read stream {id!r} back from the session's "
                                 f"streams file: {e}") from None
        state = self.engine.streams.info().get(id, {}).get("state", "idle")
        self._send_json(200, {"stream_id": id, "offset": offset, "text": text,
                              "next_offset": offset + len(text), "state": state})

    def get_events(self) -> None:
        """Server-sent events: every engine event from now on, until either side goes."""
        api, inbox = self.api, self.engine.inbox
        sid = inbox.subscribe()          # before the headers: nothing after them is missed
        api.sse_register(sid)
        try:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.wfile.write(b": connected\n\n")
            self.wfile.flush()
            last_write = time.monotonic()
            while not api.stopping and not self._client_gone():
                evts = inbox.drain_subscriber(sid, timeout=0.25)
                if evts:
                    self.wfile.write(b"".join(_sse_frame(e) for e in evts))
                    self.wfile.flush()
                    last_write = time.monotonic()
                elif time.monotonic() - last_write >= api.heartbeat_s:
                    self.wfile.write(b": heartbeat\n\n")
                    self.wfile.flush()
                    last_write = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            pass     # the client went away
        finally:
            inbox.unsubscribe(sid)
            api.sse_unregister(sid)

    def _client_gone(self) -> bool:
        """The client closed its end (it sends nothing after the request, so readable = EOF)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- act ---------------------------------------------------------------------------------
    def post_epic(self) -> None:
        body = self._body()
        epic = _field(body, "epic", str)
        if not epic.strip():
            raise HttpError(400, "the epic is empty: describe what you want built")
        fut = self._engine(self.engine.plan_epic, epic, refusal=400)
        self.api.track_job("epic", fut)
        self._send_json(202, {"status": "planning"})

    def post_accept(self) -> None:
        body = self._body()
        props = _models(_field(body, "tracks", list), TrackProposal, "tracks")
        if not props:
            raise HttpError(400, "no tracks to accept: send at least one")
        fut = self._engine(self.engine.accept_tracks, props)
        tracks = self._engine(fut.result, timeout=30)
        self._send_json(201, {"tracks": [t.model_dump(mode="json") for t in tracks]})

    def patch_track(self, id: str) -> None:
        self._require_track(id)
        body = self._body()
        title = _field(body, "title", str, required=False)
        goal = _field(body, "goal", str, required=False)
        criteria = _field(body, "acceptance_criteria", list, required=False)
        if criteria is not None and not all(isinstance(c, str) for c in criteria):
            raise HttpError(400, "field 'acceptance_criteria' must be an array of strings")
        if title is None and goal is None and criteria is None:
            raise HttpError(400, "nothing to change: send title, goal or acceptance_criteria")
        fut = self._engine(self.engine.update_track, id, title=title, goal=goal,
                           acceptance_criteria=criteria)
        track = self._engine(fut.result, timeout=30, refusal=400)
        self._send_json(200, {"track": track.model_dump(mode="json")})

    def put_tickets(self, id: str) -> None:
        self._require_track(id)
        body = self._body()
        tickets = _models(_field(body, "tickets", list), Ticket, "tickets")
        fut = self._engine(self.engine.set_tickets, id, tickets)
        track = self._engine(fut.result, timeout=30)
        self._send_json(200, {"track": track.model_dump(mode="json")})

    def post_track(self, id: str, action: str) -> None:
        self._require_track(id)
        self._optional_body()
        e = self.engine
        if action == "plan":
            self.api.track_job(f"plan:{id}", self._engine(e.plan_track, id))
            self._send_json(202, {"status": "planning", "track_id": id})
        elif action == "start":
            self.api.track_job(f"run:{id}", self._engine(e.start_track, id))
            self._send_json(202, {"status": "started", "track_id": id})
        elif action == "pause":
            self._engine(e.pause_track, id)
            self._send_json(200, {"status": "pausing", "track_id": id})
        else:
            self.api.track_job(f"run:{id}", self._engine(e.resume_track, id))
            self._send_json(202, {"status": "resumed", "track_id": id})

    def post_ticket(self, id: str, action: str) -> None:
        self._require_ticket(id)
        body = self._optional_body()
        reason = _field(body, "reason", str, required=False)
        e = self.engine
        if action == "retry":
            fut = self._engine(e.retry_ticket, id)
            track = self._track_of(id)
            self.api.track_job(f"run:{track}", fut)
            self._send_json(202, {"status": "retrying", "ticket_id": id})
            return
        fn = e.skip_ticket if action == "skip" else e.cancel_ticket
        if reason:
            self._engine(fn, id, reason)
        else:
            self._engine(fn, id)
        self._send_json(200, {"status": "skipped" if action == "skip" else "cancelling",
                              "ticket_id": id})

    def _track_of(self, ticket_id: str) -> str:
        for t in self.engine.tracks():
            if any(k.id == ticket_id for k in t.tickets):
                return t.id
        return ""

    def post_approval(self, id: str) -> None:
        body = self._body()
        approved = _field(body, "approved", bool)
        payload = _field(body, "payload", dict, required=False)
        reason = _field(body, "reason", str, required=False, default="")
        decision = (Approved(edits=payload, reason=reason, source="api") if approved
                    else Denied(reason=reason, source="api"))
        self._engine(self.engine.resolve, id, decision)
        self._send_json(200, {"status": "resolved", "approval_id": id, "approved": approved})


def _sse_frame(evt: Event) -> bytes:
    data = json.dumps(evt.to_dict(), ensure_ascii=False, default=str)
    # json.dumps never emits a raw newline, so the data fits on one `data:` line
    return f"event: {evt.type}\ndata: {data}\n\n".encode("utf-8")


# =============================================================================================
# entry points
# =============================================================================================

def start_for_engine(engine: ConductorEngine, port: int | None = None) -> ApiServer:
    """Serve the API over a started engine (the app with --api). Returns the running server;
    call `.stop()` at exit. `port`: None = settings.api_port (0 = a free port)."""
    return ApiServer(engine, port).start()


def serve_forever(workspace: str | os.PathLike, settings: Settings | None = None,
                  port: int | None = None, auto_approve: bool = False) -> int:
    """`clutch serve`: the engine and the API with no window, until SIGINT or SIGTERM.
    Prints {"url", "api_file"} as one JSON line on stdout. Returns the exit code."""
    try:
        engine = ConductorEngine(workspace, settings, auto_approve=auto_approve,
                                 inbox=Inbox(maxlen=10_000))
    except (EngineError, OSError) as e:
        print(f"clutch: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda _s, _f: stop.set())
    engine.start()
    try:
        try:
            server = start_for_engine(engine, port)
        except OSError as e:
            print(f"clutch: the API could not start on {HOST}:{port or 0}: {e}", file=sys.stderr)
            return 2
        try:
            print(json.dumps({"url": server.url, "api_file": str(server.api_file)}), flush=True)
            while not stop.is_set():
                stop.wait(0.2)
                _log_events(engine.inbox.drain())   # the GUI's inbox: nobody else reads it here
        finally:
            server.stop()
    finally:
        engine.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _log_events(evts: list[Event]) -> None:
    for e in evts:
        if isinstance(e, ErrorEvent):
            log.error("%s", e.message)
        elif isinstance(e, LogEvent) and e.level != "info":
            log.warning("%s", e.message)


# =============================================================================================
# the client (stdlib only)
# =============================================================================================

class ApiError(Exception):
    """An error response from the API, or a wait that ran out of time."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class EventStream:
    """An open /events connection. Iterate for event dicts ({"type", ...}); `close()` when done.
    The subscription exists once the constructor returns, so nothing triggered after is missed."""

    def __init__(self, client: "ApiClient", timeout: float = 30.0):
        u = urllib.parse.urlsplit(client.base_url)
        self._conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        self._conn.request("GET", "/events", headers=client._headers())
        # the response owns the socket once it is read (Connection: close); keep it to set
        # per-read deadlines
        self._sock = self._conn.sock
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            body = self._resp.read()
            self.close()
            raise ApiError(self._resp.status, _error_message(body))
        self.deadline: float | None = None

    def next_event(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, or None at the deadline or when the server ends the stream."""
        end = None if timeout is None else time.monotonic() + timeout
        if self.deadline is not None:
            end = self.deadline if end is None else min(end, self.deadline)
        etype, data = "", []
        try:
            while True:
                if end is not None:
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._sock.settimeout(remaining)
                line = self._resp.fp.readline()
                if not line:
                    return None
                line = line.decode("utf-8").rstrip("\r\n")
                if not line:
                    if data:
                        evt = json.loads("\n".join(data))
                        if etype and isinstance(evt, dict):
                            evt.setdefault("type", etype)
                        return evt
                    etype = ""
                elif line.startswith(":"):
                    continue          # a comment: connected, heartbeat
                elif line.startswith("event:"):
                    etype = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
        except (socket.timeout, TimeoutError):
            return None
        except (OSError, http.client.HTTPException, ValueError):
            return None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            evt = self.next_event()
            if evt is None:
                return
            yield evt

    def close(self) -> None:
        self._resp.close()
        self._conn.close()
        self._sock.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _error_message(raw: bytes) -> str:
    try:
        obj = json.loads(raw.decode("utf-8"))
        if isinstance(obj, dict) and "error" in obj:
            return str(obj["error"])
    except ValueError:
        pass
    return raw.decode("utf-8", "replace")[:500]


class ApiClient:
    """A client for the loopback API. Every wait polls against a deadline (no bare sleeps)."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_workspace(cls, workspace: str | os.PathLike, wait_s: float = 0.0,
                       timeout: float = 30.0) -> "ApiClient":
        """Read `<workspace>/.clutch/api.json`. With `wait_s`, wait that long for the file to
        appear and the server to answer /status (an app that is still starting)."""
        path = api_file_path(workspace)
        deadline = time.monotonic() + wait_s
        last: Exception | None = None
        while True:
            try:
                info = json.loads(path.read_text(encoding="utf-8"))
                client = cls(info["url"], info["token"], timeout=timeout)
                client.status()
                return client
            except (OSError, ValueError, KeyError, TypeError, ApiError) as e:
                last = e
            if time.monotonic() >= deadline:
                raise ApiError(0, f"no API answering for {workspace} ({path}): {last}")
            time.sleep(0.05)

    # -- transport ---------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None) -> Any:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None
        headers = self._headers()
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, _error_message(e.read())) from None
        except urllib.error.URLError as e:
            raise ApiError(0, f"cannot reach {self.base_url}: {e.reason}") from None
        return json.loads(raw.decode("utf-8")) if raw else None

    # -- read --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.request("GET", "/status")

    def state(self) -> dict[str, Any]:
        return self.request("GET", "/state")

    def approvals(self) -> list[dict[str, Any]]:
        return self.request("GET", "/approvals")["pending_approvals"]

    def stream(self, stream_id: str, offset: int = 0) -> dict[str, Any]:
        return self.request("GET", "/streams/" + urllib.parse.quote(stream_id, safe=""),
                            query={"offset": offset} if offset else None)

    def events(self, timeout: float = 30.0) -> EventStream:
        """Open /events now (subscribed on return)."""
        return EventStream(self, timeout)

    def iter_events(self, timeout: float = 30.0) -> Iterator[dict[str, Any]]:
        """Events for `timeout` seconds in all (or until the server ends the stream)."""
        stream = EventStream(self, timeout)
        stream.deadline = time.monotonic() + timeout
        try:
            yield from stream
        finally:
            stream.close()

    # -- act ---------------------------------------------------------------------------------
    def plan_epic(self, epic: str) -> dict[str, Any]:
        return self.request("POST", "/epic", {"epic": epic})

    def accept_tracks(self, tracks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.request("POST", "/tracks/accept", {"tracks": tracks})["tracks"]

    def update_track(self, track_id: str, **fields: Any) -> dict[str, Any]:
        return self.request("PATCH", "/tracks/" + _q(track_id), fields)["track"]

    def set_tickets(self, track_id: str, tickets: list[dict[str, Any]]) -> dict[str, Any]:
        return self.request("PUT", f"/tracks/{_q(track_id)}/tickets", {"tickets": tickets})["track"]

    def plan_track(self, track_id: str) -> dict[str, Any]:
        return self.request("POST", f"/tracks/{_q(track_id)}/plan")

    def start_track(self, track_id: str) -> dict[str, Any]:
        return self.request("POST", f"/tracks/{_q(track_id)}/start")

    def pause_track(self, track_id: str) -> dict[str, Any]:
        return self.request("POST", f"/tracks/{_q(track_id)}/pause")

    def resume_track(self, track_id: str) -> dict[str, Any]:
        return self.request("POST", f"/tracks/{_q(track_id)}/resume")

    def retry_ticket(self, ticket_id: str) -> dict[str, Any]:
        return self.request("POST", f"/tickets/{_q(ticket_id)}/retry")

    def skip_ticket(self, ticket_id: str, reason: str = "") -> dict[str, Any]:
        return self.request("POST", f"/tickets/{_q(ticket_id)}/skip",
                            {"reason": reason} if reason else None)

    def cancel_ticket(self, ticket_id: str, reason: str = "") -> dict[str, Any]:
        return self.request("POST", f"/tickets/{_q(ticket_id)}/cancel",
                            {"reason": reason} if reason else None)

    def resolve(self, approval_id: str, approved: bool, payload: dict[str, Any] | None = None,
                reason: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"approved": approved, "reason": reason}
        if payload is not None:
            body["payload"] = payload
        return self.request("POST", "/approvals/" + _q(approval_id), body)

    def approve(self, approval_id: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.resolve(approval_id, True, payload)

    def reject(self, approval_id: str, reason: str = "") -> dict[str, Any]:
        return self.resolve(approval_id, False, reason=reason)

    # -- waits (poll with a deadline) --------------------------------------------------------
    def wait_for(self, pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
                 what: str = "condition") -> Any:
        """Poll `pred()` until it returns something truthy; return it. ApiError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() >= deadline:
                raise ApiError(0, f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def _job_failed(self, state: dict[str, Any], key: str) -> None:
        job = state.get("jobs", {}).get(key)
        if job and job["state"] == "failed":
            raise ApiError(0, f"{key} failed: {job['error']}")

    def wait_for_proposal(self, timeout: float = 30.0) -> dict[str, Any]:
        """The current proposal {"epic", "tracks"}; fails at once if the plan failed."""
        def ready() -> Any:
            s = self.state()
            self._job_failed(s, "epic")
            return s["proposal"]
        return self.wait_for(ready, timeout, what="the epic's proposal")

    def wait_for_track_status(self, track_id: str, statuses: str | tuple[str, ...] | list[str],
                              timeout: float = 30.0) -> dict[str, Any]:
        """The track (as in /state) once its status is one of `statuses` and, unless it is
        paused, its run and any plan have ended. Fails at once if its plan failed."""
        want = (statuses,) if isinstance(statuses, str) else tuple(statuses)

        def ready() -> Any:
            s = self.state()
            for t in s["tracks"]:
                if t["id"] == track_id:
                    # a paused track still has its run; any other status waits for the run
                    # (and a plan) to end, so the next action does not race the scheduler
                    settled = t["status"] == "paused" or (
                        not t["running"]
                        and s["jobs"].get(f"plan:{track_id}", {}).get("state") != "running")
                    if t["status"] in want and settled:
                        return t
                    self._job_failed(s, f"plan:{track_id}")
                    return None
            raise ApiError(404, f"no track {track_id!r}")
        return self.wait_for(ready, timeout, what=f"track {track_id} to be {'/'.join(want)}")

    def wait_for_approval(self, kind: str | None = None, ticket_id: str | None = None,
                          timeout: float = 30.0) -> dict[str, Any]:
        """The first pending approval (of this kind / for this ticket)."""
        def ready() -> Any:
            for r in self.approvals():
                if (kind is None or r["kind"] == kind) and \
                        (ticket_id is None or r["ticket_id"] == ticket_id):
                    return r
            return None
        return self.wait_for(ready, timeout, what=f"a{' ' + kind if kind else 'n'} approval")


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")
