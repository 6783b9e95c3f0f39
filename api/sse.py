"""The /events route: server-sent events, every engine event from the moment of subscribing,
with a heartbeat, until the client goes or the server stops.

Runs on a pool worker thread, for as long as the stream is open (each open stream holds one
of the pool's threads). It owns its Inbox subscription and gives it back on the way out.
"""
from __future__ import annotations

import json
import select
import socket
import time
from typing import TYPE_CHECKING

from events import Event

if TYPE_CHECKING:
    from api.handler import Handler


def get_events(h: "Handler") -> None:
    """Server-sent events: every engine event from now on, until either side goes."""
    api, inbox = h.api, h.engine.inbox
    sid = inbox.subscribe()          # before the headers: nothing after them is missed
    api.sse_register(sid)
    try:
        h.close_connection = True
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-store")
        h.send_header("Connection", "close")
        h.send_header("X-Accel-Buffering", "no")
        h.end_headers()
        h.wfile.write(b": connected\n\n")
        h.wfile.flush()
        last_write = time.monotonic()
        while not api.stopping and not client_gone(h.connection):
            evts = inbox.drain_subscriber(sid, timeout=0.25)
            if evts:
                h.wfile.write(b"".join(sse_frame(e) for e in evts))
                h.wfile.flush()
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= api.heartbeat_s:
                h.wfile.write(b": heartbeat\n\n")
                h.wfile.flush()
                last_write = time.monotonic()
    except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
        h.close_connection = True     # the client went away: the stream simply ends
    finally:
        inbox.unsubscribe(sid)
        api.sse_unregister(sid)


def client_gone(conn: socket.socket) -> bool:
    """The client closed its end (it sends nothing after the request, so readable = EOF)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def sse_frame(evt: Event) -> bytes:
    data = json.dumps(evt.to_dict(), ensure_ascii=False, default=str)
    # json.dumps never emits a raw newline, so the data fits on one `data:` line
    return f"event: {evt.type}\ndata: {data}\n\n".encode("utf-8")
