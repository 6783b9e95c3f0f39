"""The API serves from a bounded pool of handler threads: slow clients past it get a quick
503 with a JSON error and Retry-After instead of a thread each (issue 15, point 10)."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import hook_server
from hook_server import ApiClient


def slow_clients(port: int, n: int) -> list[socket.socket]:
    """n connections that send half a request head and then nothing (a slowloris)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(s)
    return socks


def get_status(srv, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.request("GET", "/status", headers={"Authorization": f"Bearer {srv.token}"})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read() or b"null")
    finally:
        conn.close()


def api_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("clutch-api"))


def test_slow_clients_past_the_pool_get_a_quick_503_and_the_api_recovers(make_engine):
    eng = make_engine()
    srv = hook_server.start_for_engine(eng, max_handlers=4)
    held: list[socket.socket] = []
    try:
        assert get_status(srv)[0] == 200
        held = slow_clients(srv.port, 4)
        deadline = time.monotonic() + 5
        while srv.httpd.busy < 4:
            assert time.monotonic() < deadline, "the slow clients never reached the pool"
            time.sleep(0.01)
        t0 = time.monotonic()
        status, headers, body = get_status(srv)
        assert time.monotonic() - t0 < 1.0          # answered at once, not queued behind them
        assert status == 503, body
        assert headers["Content-Type"].startswith("application/json")
        assert headers["Retry-After"] == "1"
        assert "busy" in body["error"] and "4" in body["error"]
        assert srv.httpd.rejected >= 1
        for s in held:
            s.close()
        held = []
        client = ApiClient(srv.url, srv.token, timeout=5)
        assert client.wait_for(lambda: srv.httpd.busy == 0, timeout=5, what="the pool to free")
        assert client.status()["ok"] is True
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_three_hundred_slow_clients_hold_no_more_threads_than_the_pool(make_engine):
    eng = make_engine()
    srv = hook_server.start_for_engine(eng)         # the default pool
    before = threading.active_count()
    held: list[socket.socket] = []
    try:
        held = slow_clients(srv.port, 300)
        deadline = time.monotonic() + 10
        while srv.httpd.busy < hook_server.MAX_HANDLERS:
            assert time.monotonic() < deadline, srv.httpd.busy
            time.sleep(0.02)
        time.sleep(0.2)                              # let every connection be accepted
        # the pool's workers plus the one thread that lingers over rejected connections
        assert threading.active_count() - before <= hook_server.MAX_HANDLERS + 1
        assert api_threads() <= hook_server.MAX_HANDLERS + 2      # + the accept thread
        assert srv.httpd.busy == hook_server.MAX_HANDLERS
        status, headers, body = get_status(srv)
        assert status == 503 and headers["Retry-After"] == "1" and "busy" in body["error"]
    finally:
        for s in held:
            s.close()
        t0 = time.monotonic()
        srv.stop()
    assert time.monotonic() - t0 < 5                 # a stop does not wait for slow clients


def test_a_stop_ends_handlers_blocked_on_slow_clients(make_engine):
    eng = make_engine()
    srv = hook_server.start_for_engine(eng, max_handlers=2)
    held = slow_clients(srv.port, 2)
    try:
        deadline = time.monotonic() + 5
        while srv.httpd.busy < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.monotonic()
        srv.stop()
        deadline = time.monotonic() + 3
        while srv.httpd.busy:
            assert time.monotonic() < deadline, "a handler stayed blocked on its slow client"
            time.sleep(0.01)
        assert time.monotonic() - t0 < 3
    finally:
        for s in held:
            s.close()
