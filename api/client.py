"""The API's client, stdlib only (urllib, http.client): `ApiClient` with a method per endpoint
and waits that poll against a deadline, `EventStream` for /events, `ApiError` for any error
answer.

Runs on the caller's thread; an `ApiClient` holds only its URL, token and timeout, and an
`EventStream` its one connection. Imports nothing of Clutch's but the api.json location, so
scripts can use it against a running app.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from api.apifile import api_file_path


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

    def state(self, session: str | None = None) -> dict[str, Any]:
        """The engine's state; its usage covers every session of the workspace, or only the
        running one with session="current"."""
        return self.request("GET", "/state", query={"session": session} if session else None)

    def sessions(self) -> list[dict[str, Any]]:
        """Every session of the workspace, oldest first: id, started, ended, current,
        entries, tickets, tokens, cost, usage, damaged_lines."""
        return self.request("GET", "/sessions")["sessions"]

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

    def revert_ticket(self, ticket_id: str) -> dict[str, Any]:
        """Undo a completed ticket's commit with `git revert`; the ticket goes back to todo.
        Returns {"status": "reverted", "ticket_id", "revert_sha"}."""
        return self.request("POST", f"/tickets/{_q(ticket_id)}/revert")

    def set_verify_command(self, track_id: str, command: str | None) -> dict[str, Any]:
        """A track's own verify command (None: the setting's). {verify_command, suggested}."""
        return self.request("PUT", f"/tracks/{_q(track_id)}/verify", {"command": command})

    def init_git(self) -> dict[str, Any]:
        """`git init` and a first commit of the workspace: {commit, worktrees, ...}."""
        return self.request("POST", "/git/init")

    def ticket_diff(self, ticket_id: str) -> dict[str, Any]:
        """One ticket's change: {ticket_id, track_id, commit, branch, files, diff}."""
        return self.request("GET", f"/tickets/{_q(ticket_id)}/diff")

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

    # -- settings ----------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """{"settings": every setting, "providers": as provider_settings()}."""
        return self.request("GET", "/settings")

    def provider_settings(self) -> dict[str, Any]:
        """{"provider", "tiers": {"Tier N": {"provider", "model", "own_provider", "role"}},
        "providers": {name: {"in_use", "key": {"names", "present", "ok"}, "endpoint", ...}}}."""
        return self.request("GET", "/settings/providers")

    def set_providers(self, provider: str | None = None,
                      tiers: dict[str, Any] | None = None,
                      endpoints: dict[str, str] | None = None) -> dict[str, Any]:
        """Change the default provider, tiers ({"Tier 3": {"provider": "ollama", "model":
        "qwen2.5-coder:7b"}}, {"provider": "default"} to follow the default) or endpoints
        ({"ollama": "http://host:11434"}). Returns provider_settings()."""
        body = {k: v for k, v in (("provider", provider), ("tiers", tiers),
                                  ("endpoints", endpoints)) if v is not None}
        return self.request("PUT", "/settings/providers", body)

    def ollama_models(self, host: str | None = None) -> dict[str, Any]:
        """{"host", "models": [{"name", "size", "family", "parameter_size", "quantization"}]};
        ApiError 502 when no Ollama server answers."""
        return self.request("GET", "/providers/ollama/models",
                            query=None if host is None else {"host": host})

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
