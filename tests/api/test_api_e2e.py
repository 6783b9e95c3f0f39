"""End to end over HTTP: the whole flow (epic -> edited proposal -> tickets -> edited spawns ->
approved tool calls -> done) against `clutch serve` and against the live app under Xvfb, each in
its own process, on the offline model. Only the API and files on disk are used to check."""
from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ai_client import usage_from_entries
from gui_support import Xvfb
from hook_server import ApiClient

ROOT = Path(__file__).resolve().parents[2]
EPIC = "Add a health endpoint with its tests, and document it"   # two tracks: code, docs
EDITED_FILE = "edited_over_api/health_check.py"
TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def e2e_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / ".clutch").mkdir(parents=True)
    (ws / "README.md").write_text("# demo workspace\n")
    # settings the app and `clutch serve` both read: no pacing, no git
    (ws / ".clutch" / "config.toml").write_text("offline_pace_s = 0.0\ngit_commits = false\n")
    return ws


class Proc:
    """A child process with its stderr in a file (shown on failure) and a line reader on stdout."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None):
        import os
        self.log = log
        self._err = open(log, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                                     stderr=self._err, stdin=subprocess.DEVNULL)
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def first_line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line on stdout within {timeout}s; stderr:\n{self.stderr()}")
        if not line:
            raise AssertionError(f"exited with {self.proc.wait()} before printing; stderr:\n"
                                 f"{self.stderr()}")
        return line.decode()

    def stderr(self) -> str:
        self._err.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def terminate_and_wait(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout}s of SIGTERM; stderr:\n"
                                 f"{self.stderr()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._err.close()


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def run_whole_flow(client: ApiClient, ws: Path, timeout: float = 30) -> None:
    """Plan, review (edit a title), plan tickets, start, approve spawns (one with an edited
    prompt) and tool calls, all over HTTP; then check streams, usage and the edit."""
    assert client.plan_epic(EPIC) == {"status": "planning"}
    proposal = client.wait_for_proposal(timeout)
    assert proposal["epic"] == EPIC and len(proposal["tracks"]) >= 2
    props = [dict(p) for p in proposal["tracks"]]
    props[0]["title"] = "Edited over the API: " + props[0]["title"]
    tracks = client.accept_tracks(props)
    assert [t["title"] for t in tracks] == [p["title"] for p in props]
    assert client.state()["proposal"] is None
    for t in tracks:
        client.plan_track(t["id"])
    planned = [client.wait_for_track_status(t["id"], "planned", timeout) for t in tracks]
    assert planned[0]["title"].startswith("Edited over the API: ")
    # edit the spawn of a ticket nothing depends on: its worker writes the edited file instead
    first = planned[0]["tickets"]
    needed = {d for k in first for d in k["depends_on"]}
    edited = next(k for k in reversed(first) if k["id"] not in needed)
    assert EDITED_FILE not in edited["target_files"]

    for t in tracks:
        assert client.start_track(t["id"])["status"] == "started"
    answered: dict[str, dict] = {}

    def answer_and_check_done() -> bool:
        state = client.state()
        for r in state["pending_approvals"]:
            if r["id"] in answered:
                continue
            answered[r["id"]] = r
            payload = None
            if r["kind"] == "spawn" and r["ticket_id"] == edited["id"]:
                payload = dict(r["payload"])
                payload["prompt"] = re.sub(r"(?m)^TARGET FILES:.*$", f"TARGET FILES: {EDITED_FILE}",
                                           payload["prompt"])
                assert payload["prompt"] != r["payload"]["prompt"]
            client.approve(r["id"], payload)
        return all(t["status"] in TERMINAL and not t["running"] for t in state["tracks"])
    client.wait_for(answer_and_check_done, timeout=timeout, interval=0.02,
                    what="every track to finish")

    state = client.state()
    for t in state["tracks"]:
        assert t["status"] == "completed", (t["id"], [(k["id"], k["status"], k["blocked_reason"])
                                                      for k in t["tickets"]])
    kinds = {r["kind"] for r in answered.values()}
    assert {"spawn", "tool", "shell"} <= kinds, kinds
    ticket_ids = [k["id"] for t in state["tracks"] for k in t["tickets"]]
    assert sum(r["kind"] == "spawn" for r in answered.values()) == len(ticket_ids)

    # every worker stream has content, read over HTTP
    for tid in ticket_ids:
        sid = f"Tier 3 (Worker): {tid}"
        assert state["streams"][sid]["length"] > 0 and state["streams"][sid]["state"] == "done"
        s = client.stream(sid)
        assert s["text"].strip() and s["next_offset"] == state["streams"][sid]["length"]

    # usage per tier: non-zero, and exactly the sums over the comms log on disk
    session_dir = Path(client.status()["session_dir"])
    entries = [json.loads(ln) for ln in (session_dir / "comms.jsonl").read_text().splitlines()]
    on_disk = {tier: u.summary() for tier, u in usage_from_entries(entries).items()}
    for tier in ("Tier 1", "Tier 2", "Tier 3"):
        u = state["usage"]["tier"][tier]
        assert u["total_tokens"] > 0 and u["requests"] > 0 and u["input_tokens"] > 0, (tier, u)
    assert state["usage"]["tier"] == on_disk

    # the edited prompt is what ran: the worker's first request carries the edit
    first_req = next(e for e in entries if e["kind"] == "request" and e["ticket_id"] == edited["id"])
    text = first_req["data"]["messages"][0]["text"]
    assert f"TARGET FILES: {EDITED_FILE}" in text
    assert "TARGET FILES: " + ", ".join(edited["target_files"]) not in text
    assert (ws / EDITED_FILE).is_file()
    for f in edited["target_files"]:
        assert not (ws / f).exists()
    # every decision was recorded as the API's
    decisions = [e["data"] for e in entries if e["kind"] == "approval"]
    assert len(decisions) == len(answered) and all(d["source"] == "api" for d in decisions)


def test_whole_flow_against_clutch_serve(e2e_workspace, procs, tmp_path):
    p = Proc([sys.executable, "cli.py", "serve", "--workspace", str(e2e_workspace)], cwd=ROOT,
             log=tmp_path / "serve.stderr")
    procs.append(p)
    info = json.loads(p.first_line(timeout=20))
    assert set(info) == {"url", "api_file"}
    api_file = Path(info["api_file"])
    assert api_file == e2e_workspace / ".clutch" / "api.json" and api_file.exists()
    assert info["url"].startswith("http://127.0.0.1:")
    client = ApiClient.from_workspace(e2e_workspace)
    assert client.base_url == info["url"] and client.status()["provider"] == "offline"

    run_whole_flow(client, e2e_workspace)

    assert p.terminate_and_wait() == 0, p.stderr()
    assert not api_file.exists()
    assert "Traceback" not in p.stderr()


def test_whole_flow_against_the_live_app_under_xvfb(e2e_workspace, procs, tmp_path):
    try:
        xvfb = Xvfb(size="1280x1000x24")
    except RuntimeError as e:   # a set-up failure, never a skip
        pytest.fail(f"cannot run the live app: {e}")
    try:
        p = Proc([sys.executable, "-c",
                  "import sys, gui_2, hook_server; sys.exit(gui_2.main(workspace=sys.argv[1], api=hook_server.start_for_engine))",
                  str(e2e_workspace)], cwd=ROOT, log=tmp_path / "app.stderr", env=xvfb.env)
        procs.append(p)
        try:
            client = ApiClient.from_workspace(e2e_workspace, wait_s=30)
        except Exception as e:
            raise AssertionError(f"the app did not start its API ({e}); the app must call "
                                 f"hook_server.start_for_engine(engine) when api=True; stderr:\n"
                                 f"{p.stderr()}") from None
        info = json.loads((e2e_workspace / ".clutch" / "api.json").read_text())
        assert info["pid"] == p.proc.pid

        run_whole_flow(client, e2e_workspace)

        rc = p.terminate_and_wait()
        assert rc == 0, f"the app exited with {rc}; stderr:\n{p.stderr()}"
        assert not (e2e_workspace / ".clutch" / "api.json").exists()
        assert "Traceback" not in p.stderr()
    finally:
        xvfb.close()
