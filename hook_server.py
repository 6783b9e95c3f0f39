"""The API layer's door: the loopback HTTP API, so automation and end-to-end tests drive the
same engine the GUI does. The code lives in the `api/` package; this module keeps the layer's
public face (every name the CLI, the GUI, tests and bench import from here).

    server = start_for_engine(engine)        # the app with --api
    serve_forever(workspace, settings)       # `clutch serve`: the engine with no window
    client = ApiClient.from_workspace(ws)    # scripts and tests

The server binds to 127.0.0.1 only and requires `Authorization: Bearer <token>`; the token is
generated per run and written, with the port, to `<workspace>/.clutch/api.json` (mode 0600),
removed on stop. Requests run on a bounded pool of handler threads (api.pool); past it the
answer is 503 with Retry-After. Errors are JSON `{"error": "<message>"}`: 400 malformed, 401
no or wrong token, 404 unknown id or endpoint, 405 wrong method, 409 the engine refused, 413
body too large, 503 busy. A stack trace never leaves the process; it goes to the log.
docs/api.md lists the endpoints.

Runs on no thread of its own; owns no state.
"""
from __future__ import annotations

from api.apifile import API_FILE, HOST, api_file_path
from api.client import ApiClient, ApiError, EventStream
from api.handler import ENGINE_WAIT_S, MAX_BODY
from api.pool import MAX_HANDLERS, PooledHTTPServer
from api.server import HEARTBEAT_S, ApiServer, serve_forever, start_for_engine
from api.validation import HttpError

__all__ = ("API_FILE", "HOST", "api_file_path", "ApiClient", "ApiError", "EventStream",
           "ENGINE_WAIT_S", "MAX_BODY", "MAX_HANDLERS", "PooledHTTPServer", "HEARTBEAT_S",
           "ApiServer", "serve_forever", "start_for_engine", "HttpError")
