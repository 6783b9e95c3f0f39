"""The loopback HTTP server under the fake OpenAI and Anthropic servers (stdlib only): a
threaded server in a daemon thread, recorded requests, a FIFO of scripted replies with a
fallback handler, and the low-level writes (JSON, chunked SSE, a cut connection).

A subclass implements `route(handler, request)` and `default_reply(request)` (abstract: a
fake that forgets one cannot be made).
"""
from __future__ import annotations

import abc
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict            # lowercased keys
    body: Any                # parsed JSON, or None
    client_port: int = 0     # the connection it came on (a kept-alive one is reused)


class Cut(Exception):
    """Raised inside a reply to drop the connection."""


class FakeServer(abc.ABC):
    """A scripted HTTP server on 127.0.0.1:<free port>."""

    name = "fake"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._queue: list[Any] = []
        self._handler: Optional[Callable[[Recorded], Any]] = None
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.handler_errors: list[BaseException] = []

    # ---- lifecycle
    def start(self):
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, name=self.name,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- scripting
    def enqueue(self, *replies: Any) -> None:
        with self._lock:
            self._queue.extend(replies)

    def script(self, handler: Optional[Callable[[Recorded], Any]]) -> None:
        self._handler = handler

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self._handler = None
            self.handler_errors.clear()
        self.on_reset()

    def on_reset(self) -> None:
        """Subclasses clear their own bookkeeping."""

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def next_reply(self, req: Recorded) -> Any:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        if self._handler is not None:
            r = self._handler(req)
            if r is not None:
                return r
        return self.default_reply(req)

    def record(self, req: Recorded) -> None:
        with self._lock:
            self._requests.append(req)

    # ---- for subclasses
    @abc.abstractmethod
    def default_reply(self, req: Recorded) -> Any:
        """The reply when nothing is queued and no handler answers."""

    @abc.abstractmethod
    def route(self, h: "_Handler", req: Recorded) -> None:
        """Answer one recorded request on its handler."""


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that closed its kept-alive connection (the SDKs close a stream's
        connection once they have read it) is not an error; anything else is kept for the
        test to fail on."""
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            return
        if exc is not None:
            self.fake.handler_errors.append(exc)  # type: ignore[attr-defined]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # many small writes (headers, one SSE event each): without TCP_NODELAY a kept-alive
    # connection waits on the client's delayed ACK (~40 ms a response), as no real API does
    disable_nagle_algorithm = True

    def log_message(self, *a) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        req = Recorded(method, parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                       {k.lower(): v for k, v in self.headers.items()}, body,
                       self.client_address[1])
        fake.record(req)
        try:
            fake.route(self, req)
        except Cut:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 -- kept for the test to fail on, and answered 500
            fake.handler_errors.append(e)
            self.close_connection = True
            try:
                self.send_json(500, {"error": {"message": f"fake server bug: {e!r}"}})
            except OSError:
                pass

    # ---- writes
    def send_json(self, status: int, obj: Any, headers: Optional[dict] = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def sse_start(self, chunked: bool = True, headers: Optional[dict] = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def write(self, data: bytes, chunked: bool = True) -> None:
        if chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.wfile.write(data)
        self.wfile.flush()

    def sse_end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def abort(self) -> None:
        """Drop the connection mid-body (an incomplete chunked body, or EOF when
        close-delimited)."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise Cut()


def split(text: str, n: int) -> list[str]:
    """text in n nearly equal pieces (fewer when shorter)."""
    n = max(1, min(n, len(text) or 1))
    size, rem = divmod(len(text), n)
    out, i = [], 0
    for k in range(n):
        j = i + size + (1 if k < rem else 0)
        out.append(text[i:j])
        i = j
    return out


def count_tokens(text: str) -> int:
    """The fakes' tokenizer: ceil(len / 4)."""
    return (len(text) + 3) // 4
