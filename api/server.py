"""The API server over one engine: `ApiServer` (the pooled HTTP server, the token and
`.clutch/api.json`, jobs started over the API, the /status and /state views),
`start_for_engine` (the app with --api) and `serve_forever` (`clutch serve`).

Threads: `start()` / `stop()` run on the caller's thread (the GUI's main thread, `clutch
serve`'s main thread); the accept loop on "clutch-api"; requests on the pool's workers (see
api.pool); job callbacks on whichever thread completes the engine's future. State it owns:
the token, the job table (under `_jobs_lock`), the open /events subscriptions (under
`_sse_lock`), the stop flag.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from typing import Any

from api.apifile import API_FILE, HOST, api_file_path
from api.handler import describe
from api.pool import MAX_HANDLERS, PooledHTTPServer
from api.routes import ApiHandler
from events import ErrorEvent, Event, Inbox, LogEvent
from models import Settings
from multi_agent_conductor import ConductorEngine, EngineError

log = logging.getLogger("clutch.api")

HEARTBEAT_S = 10.0


class _HTTPServer(PooledHTTPServer):
    api: "ApiServer"


class ApiServer:
    """The API over one running engine. Use `start_for_engine`; `.stop()` when done."""

    def __init__(self, engine: ConductorEngine, port: int | None = None,
                 heartbeat_s: float = HEARTBEAT_S, max_handlers: int = MAX_HANDLERS):
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
        self.httpd = _HTTPServer((HOST, port), ApiHandler, max_handlers=max_handlers)
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
        self.httpd.close_connections()
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
        if not isinstance(fut, concurrent.futures.Future):
            return          # the command finished at once: nothing to follow
        with self._jobs_lock:
            self._jobs[key] = {"state": "running", "error": "", "future": fut}

        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():
                state, err = "cancelled", ""
            elif f.exception() is not None:
                state, err = "failed", describe(f.exception())  # type: ignore[arg-type]
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

    def state(self, session: str = "all") -> dict[str, Any]:
        """`session`: "all" (usage over every session of the workspace) or "current"."""
        e = self.engine
        tracks = []
        for t in e.tracks():
            d = t.model_dump(mode="json")
            done, total = t.progress()
            d["progress"] = {"done": done, "total": total}
            d["running"] = e.is_running(t.id)
            d["paused"] = e.is_paused(t.id)
            tracks.append(d)
        report = e.usage_report(session)
        usage = {key: {k: u.summary() for k, u in sorted(report[key].items())}
                 for key in ("tier", "track", "ticket")}
        usage["total"] = report["total"].summary()
        current = e.current_proposal()
        return {
            "workspace": str(e.workspace),
            "session_dir": str(e.session_dir),
            "provider": e.settings.provider,
            "tracks": tracks,
            "streams": {sid: dict(info) for sid, info in sorted(e.stream_info().items())},
            "usage": usage,
            "usage_scope": session,        # "all" sessions of the workspace, or "current"
            "pending_approvals": [r.model_dump(mode="json") for r in e.pending_approvals()],
            "proposal": None if current is None else {
                "epic": current[0], "tracks": [p.model_dump(mode="json") for p in current[1].tracks]},
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



def start_for_engine(engine: ConductorEngine, port: int | None = None,
                     max_handlers: int = MAX_HANDLERS) -> ApiServer:
    """Serve the API over a started engine (the app with --api). Returns the running server;
    call `.stop()` at exit. `port`: None = settings.api_port (0 = a free port).
    `max_handlers`: requests served at once (an open /events stream holds one); past it, 503."""
    return ApiServer(engine, port, max_handlers=max_handlers).start()


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

