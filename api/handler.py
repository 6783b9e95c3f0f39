"""The API's request handler: routing, the bearer token, bodies, JSON answers, and calls into
the engine with its refusals turned into HTTP errors. The routes themselves are functions in
api.routes; `Handler.routes` is their table.

Runs on a pool worker thread (api.pool), one request at a time per connection; a handler
holds only its request's state.
"""
from __future__ import annotations

import concurrent.futures
import hmac
import json
import logging
import re
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from api.validation import HttpError, json_type
from models import DagError
from multi_agent_conductor import ApprovalNotFound, ConductorEngine, EngineError

if TYPE_CHECKING:
    from api.server import ApiServer

log = logging.getLogger("clutch.api")

MAX_BODY = 10 * 1024 * 1024
ENGINE_WAIT_S = 30.0     # the longest a request waits for an engine command's future

Route = tuple[str, re.Pattern[str], Callable[..., None]]


def describe(e: BaseException) -> str:
    if isinstance(e, (EngineError, DagError, ApprovalNotFound)):
        return str(e)
    return f"{type(e).__name__}: {e}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "clutch-api"
    sys_version = ""
    timeout = 20          # an idle keep-alive connection gives its pool thread back after 20 s
    routes: tuple[Route, ...] = ()      # set by api.routes.ApiHandler

    # -- plumbing ----------------------------------------------------------------------------
    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    @property
    def api(self) -> "ApiServer":
        return self.server.api   # type: ignore[attr-defined]

    @property
    def engine(self) -> ConductorEngine:
        return self.api.engine

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
                self.drain_body()
                raise HttpError(401, "missing or wrong bearer token (see .clutch/api.json)",
                                {"WWW-Authenticate": "Bearer"})
            route, params, allowed = None, {}, set()
            for m, pattern, fn in self.routes:
                match = pattern.fullmatch(path)
                if match is None:
                    continue
                if m != method:
                    allowed.add(m)
                    continue
                route = fn
                params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
                break
            if route is None:
                self.drain_body()
                if allowed:
                    raise HttpError(405, f"{method} is not allowed on {path}; use "
                                         f"{' or '.join(sorted(allowed))}")
                raise HttpError(404, f"no such endpoint: {method} {path}")
            route(self, **params)
        except HttpError as e:
            self.send_json(e.status, {"error": e.message}, extra=e.headers or None)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:   # never a stack trace in a response; the log keeps it
            log.exception("API %s %s failed", method, self.path)
            try:
                self.send_json(500, {"error": f"internal error: {describe(e)}"})
            except OSError:
                self.close_connection = True

    def _authorized(self) -> bool:
        got = (self.headers.get("Authorization") or "").encode("utf-8", "replace")
        want = f"Bearer {self.api.token}".encode()
        return hmac.compare_digest(got, want)

    def drain_body(self) -> None:
        """Read and drop a body we will not use, so a keep-alive connection stays in sync."""
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if 0 < n <= 1024 * 1024:
            self.rfile.read(n)
        elif n != 0 or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def body(self) -> dict[str, Any]:
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
            raise HttpError(400, f"the body must be a JSON object, not {json_type(body)}")
        return body

    def optional_body(self) -> dict[str, Any]:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 1   # let body() report it
        if n == 0 and not self.headers.get("Transfer-Encoding"):
            return {}
        return self.body()

    def send_json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
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
    def call_engine(self, fn: Callable[..., Any], *args: Any, refusal: int = 409,
                    wait_s: float = ENGINE_WAIT_S, **kw: Any) -> Any:
        """Call an engine command and return its result, mapping its refusals to HTTP errors
        with the engine's message. A command that returns a Future is waited for, at most
        `wait_s` (503 past it: the engine did not answer in time); its refusals count the same
        whether raised at once or through the Future."""
        with self.engine_errors(refusal):
            result = fn(*args, **kw)
            if isinstance(result, concurrent.futures.Future):
                return result.result(timeout=wait_s)
            return result

    def engine_errors(self, refusal: int = 409) -> "_EngineErrors":
        return _EngineErrors(refusal)

    def require_track(self, track_id: str) -> None:
        if track_id not in {t.id for t in self.engine.tracks()}:
            raise HttpError(404, f"no track {track_id!r}")

    def require_ticket(self, ticket_id: str) -> None:
        if not any(k.id == ticket_id for t in self.engine.tracks() for k in t.tickets):
            raise HttpError(404, f"no ticket {ticket_id!r}")


class _EngineErrors:
    """`with h.engine_errors():` turns the engine's refusals into HttpErrors."""

    def __init__(self, refusal: int):
        self.refusal = refusal

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, e: BaseException | None, tb: Any) -> bool:
        if e is None:
            return False
        if isinstance(e, ApprovalNotFound):
            raise HttpError(404, str(e)) from None
        if isinstance(e, DagError):
            raise HttpError(400, str(e)) from None
        if isinstance(e, EngineError):   # includes ApprovalAlreadyResolved
            raise HttpError(self.refusal, str(e)) from None
        if isinstance(e, concurrent.futures.TimeoutError):
            raise HttpError(503, "the engine did not answer in time; try again",
                            {"Retry-After": "1"}) from None
        return False
