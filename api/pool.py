"""The API's HTTP server: a bounded pool of handler threads, 503 past it.

`ThreadingHTTPServer` starts a thread per connection, so 300 slow clients held 305 threads.
`PooledHTTPServer` hands each accepted connection to one of at most `max_handlers` worker
threads (started as they are needed, daemon threads); a connection that arrives while every
one of them is busy is answered at once, on the accept thread, with `503` + a JSON error +
`Retry-After`, and then lingers on one "reject" thread that reads what the client still sends
(so the close is not a reset that could eat the answer) until it closes or a second has passed.

Threads: `serve_forever` runs on the API's accept thread ("clutch-api"); requests run on
"clutch-api-N" workers; rejected sockets linger on "clutch-api-reject". State it owns, each
under `_lock`: the busy count, the worker threads, the open connections (closed on
`close_connections` so a stop never waits for a slow client) and the lingering rejects.
"""
from __future__ import annotations

import json
import logging
import queue
import select
import socket
import threading
import time
from http.server import HTTPServer
from typing import Any

log = logging.getLogger("clutch.api")

MAX_HANDLERS = 32
LINGER_S = 1.0          # how long a rejected connection may take to finish sending
MAX_LINGERING = 1024    # past this many, a rejected connection is closed without lingering


def busy_response(max_handlers: int) -> bytes:
    body = json.dumps({"error": f"the API is busy: all {max_handlers} request handlers are in "
                                "use; try again in a moment"}).encode("utf-8")
    head = ("HTTP/1.1 503 Service Unavailable\r\n"
            "Server: clutch-api\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Retry-After: 1\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n").encode("ascii")
    return head + body


class PooledHTTPServer(HTTPServer):
    """An HTTPServer whose requests run on a bounded pool of daemon threads."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Any,
                 max_handlers: int = MAX_HANDLERS):
        if max_handlers < 1:
            raise ValueError("max_handlers must be at least 1")
        self.max_handlers = max_handlers
        self._lock = threading.Lock()
        self._busy = 0
        self._workers: list[threading.Thread] = []
        self._work: queue.SimpleQueue[tuple[socket.socket, Any] | None] = queue.SimpleQueue()
        self._open: set[socket.socket] = set()
        self._lingering: list[tuple[socket.socket, float]] = []
        self._linger_wake = threading.Event()
        self._linger_thread: threading.Thread | None = None
        self._closing = False
        self.rejected = 0                      # how many connections were answered 503
        self._busy_response = busy_response(max_handlers)
        super().__init__(address, handler)

    # -- accept thread -----------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if self._busy >= self.max_handlers or self._closing:
                self.rejected += 1
                full = True
            else:
                full = False
                self._busy += 1
                self._open.add(request)
                if self._busy > len(self._workers):
                    t = threading.Thread(target=self._worker, daemon=True,
                                         name=f"clutch-api-{len(self._workers) + 1}")
                    self._workers.append(t)
                    t.start()
        if full:
            self._reject(request)
        else:
            self._work.put((request, client_address))

    def _reject(self, request: socket.socket) -> None:
        try:
            request.setblocking(False)
            request.send(self._busy_response)     # small: fits the fresh socket's buffer
        except OSError as e:
            log.debug("could not send 503 to a client past the pool: %s", e)
            self._close(request)
            return
        with self._lock:
            if len(self._lingering) >= MAX_LINGERING:
                keep = False
            else:
                keep = True
                self._lingering.append((request, time.monotonic() + LINGER_S))
                if self._linger_thread is None:
                    self._linger_thread = threading.Thread(target=self._linger, daemon=True,
                                                           name="clutch-api-reject")
                    self._linger_thread.start()
        if keep:
            self._linger_wake.set()
        else:
            self._close(request)

    # -- worker threads ----------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:   # noqa: BLE001 - logged by handle_error, the worker goes on
                self.handle_error(request, client_address)
            finally:
                with self._lock:
                    self._open.discard(request)
                    self._busy -= 1
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("API connection from %s failed", client_address)

    @property
    def busy(self) -> int:
        """How many connections are being served now."""
        with self._lock:
            return self._busy

    # -- the reject thread -------------------------------------------------------------------
    def _linger(self) -> None:
        while True:
            with self._lock:
                socks = list(self._lingering)
                closing = self._closing
            if closing and not socks:
                return
            if not socks:
                self._linger_wake.wait(0.5)
                self._linger_wake.clear()
                continue
            now = time.monotonic()
            done = {s for s, deadline in socks if deadline <= now or closing}
            live = [s for s, _ in socks if s not in done]
            try:
                readable, _, _ = select.select(live, [], [], 0.05) if live else ([], [], [])
            except (OSError, ValueError):
                readable = []
                done.update(s for s in live if s.fileno() < 0)
            for s in readable:
                try:
                    if not s.recv(65536):
                        done.add(s)         # the client read its 503 and closed
                except BlockingIOError:
                    continue
                except OSError:
                    done.add(s)
            if done:
                with self._lock:
                    self._lingering = [(s, d) for s, d in self._lingering if s not in done]
                for s in done:
                    self._close(s)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        try:
            sock.close()
        except OSError as e:
            log.debug("closing a rejected connection: %s", e)

    # -- stop --------------------------------------------------------------------------------
    def close_connections(self) -> None:
        """Shut every open connection (a handler blocked on a slow client returns at once) and
        end the worker threads once they are free. Called on stop, after serve_forever ended."""
        with self._lock:
            self._closing = True
            conns = list(self._open)
            workers = len(self._workers)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError as e:     # already closed by its handler: nothing to end
                log.debug("shutting an API connection: %s", e)
        for _ in range(workers):
            self._work.put(None)
        self._linger_wake.set()
