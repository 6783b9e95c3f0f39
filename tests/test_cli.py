"""`clutch run`, `clutch tracks`: the headless commands as a user runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def clutch(*args, stdin=subprocess.DEVNULL, timeout=120, env=None):
    e = dict(os.environ)
    e.pop("GEMINI_API_KEY", None)
    e.pop("GOOGLE_API_KEY", None)
    e.update(env or {})
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, stdin=stdin, timeout=timeout, cwd=ROOT, env=e)


def test_run_yes_json_prints_a_valid_summary(tmp_path):
    ws = tmp_path / "ws"
    p = clutch("run", "--epic", "Add a health endpoint and its tests", "--workspace", str(ws),
               "--yes", "--json", "--pace", "0", "--max-workers", "4")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)          # stdout is the JSON and nothing else
    assert Path(summary["session_dir"]).is_dir()
    assert summary["tracks"] and all(t["status"] == "completed" for t in summary["tracks"])
    for t in summary["tracks"]:
        assert t["tickets"] and all(k["status"] == "completed" for k in t["tickets"])
    for tier in ("Tier 1", "Tier 2", "Tier 3"):
        u = summary["usage"][tier]
        assert set(u) >= {"input_tokens", "output_tokens", "cached_tokens", "thoughts_tokens",
                          "total_tokens", "requests", "cost_usd"}
        assert u["total_tokens"] > 0 and u["requests"] > 0
    workers = [s for s in summary["streams"] if s.startswith("Tier 3 (Worker): T-")]
    assert len(workers) == sum(len(t["tickets"]) for t in summary["tracks"])
    assert all(summary["streams"][s] > 0 for s in workers)
    assert "INFO" in p.stderr     # logs go to stderr

    # the usage in the summary equals the sums over comms.jsonl
    entries = [json.loads(l) for l in
               (Path(summary["session_dir"]) / "comms.jsonl").read_text().splitlines()]
    t3 = sum(e["usage"]["total_tokens"] for e in entries if e["usage"] and e["tier"] == "Tier 3")
    assert t3 == summary["usage"]["Tier 3"]["total_tokens"]

    # and `clutch tracks` reads the same tracks back from disk
    q = clutch("tracks", "--workspace", str(ws), "--json")
    assert q.returncode == 0, q.stderr
    listed = json.loads(q.stdout)["tracks"]
    assert sorted(t["id"] for t in listed) == sorted(t["id"] for t in summary["tracks"])
    assert all(k["status"] == "completed" for t in listed for k in t["tickets"])


def test_run_without_terminal_or_yes_stops_with_a_clear_error(tmp_path):
    p = clutch("run", "--epic", "x", "--workspace", str(tmp_path))
    assert p.returncode == 2
    assert "no terminal" in p.stderr and "--yes" in p.stderr
    assert "Traceback" not in p.stderr


def test_run_with_nothing_to_do(tmp_path):
    p = clutch("run", "--workspace", str(tmp_path), "--yes")
    assert p.returncode == 2 and "nothing to do" in p.stderr


def test_run_empty_epic_is_refused(tmp_path):
    p = clutch("run", "--epic", "  ", "--workspace", str(tmp_path), "--yes")
    assert p.returncode != 0 and "epic is empty" in p.stderr and "Traceback" not in p.stderr


def test_run_unknown_track(tmp_path):
    p = clutch("run", "--track", "nope_20260101", "--workspace", str(tmp_path), "--yes")
    assert p.returncode != 0 and "no such track: nope_20260101" in p.stderr


def test_terminal_approvals_inline_edit_and_reject(tmp_path):
    """Without --yes, on a terminal: approvals are asked on the terminal; an inline edit of the
    spawn prompt is what the worker receives; a rejected shell command does not run."""
    import pty
    ws = tmp_path / "ws"
    ws.mkdir()
    # answers: plan via --track needs a track; use an epic and answer every prompt
    master, slave = pty.openpty()
    env = dict(os.environ, EDITOR="", VISUAL="")
    env.pop("GEMINI_API_KEY", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "run", "--epic",
                             "Write a greeting module", "--workspace", str(ws), "--json",
                             "--pace", "0", "--max-workers", "1"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env, text=True)
    os.close(slave)
    import threading
    err_chunks = []

    def read_err():   # raw reads: the approval prompt has no newline after it
        while True:
            b = os.read(proc.stderr.fileno(), 65536)
            if not b:
                return
            err_chunks.append(b.decode("utf-8", "replace"))
    t = threading.Thread(target=read_err, daemon=True)
    t.start()
    answered = 0
    edited = False
    import time
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        text = "".join(err_chunks)
        prompts_shown = text.count("[a]pprove, [e]dit then approve, [r]eject? ")
        if prompts_shown > answered:
            last = text[text.rfind("=== approval:"):]
            if "[spawn]" in last and not edited:
                os.write(master, b"e\n")
                # inline JSON edit: replace the whole payload with an edited prompt
                payload = {"prompt": "TICKET T-001: edited by the terminal user\n\n"
                                     "TARGET FILES: hello_edited.txt\n", "context": ""}
                os.write(master, (json.dumps(payload) + "\n\n").encode())
                edited = True
            elif "[shell]" in last:
                os.write(master, b"r\nnot now\n")
            else:
                os.write(master, b"a\n")
            answered += 1
        time.sleep(0.05)
    proc.wait(timeout=30)
    os.close(master)
    out = proc.stdout.read()
    assert edited, "".join(err_chunks)[-2000:]
    summary = json.loads(out)
    entries = [json.loads(l) for l in
               (Path(summary["session_dir"]) / "comms.jsonl").read_text().splitlines()]
    first_req = next(e for e in entries if e["kind"] == "request" and e["tier"] == "Tier 3")
    assert "edited by the terminal user" in first_req["data"]["messages"][0]["text"]
    assert (ws / "hello_edited.txt").exists()
    shell = [e for e in entries if e["kind"] == "tool_result" and e["data"]["name"] == "run_shell"]
    assert shell and all(e["data"]["result"].get("rejected") for e in shell)


def test_the_window_app_takes_tier_provider_and_refuses_a_bad_one_before_any_window(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    p = clutch("--tier-provider", "Tier 9=ollama", "--workspace", str(ws), timeout=30)
    assert p.returncode == 2 and "'Tier 9' is not a tier" in p.stderr


def _tracks(ws: Path) -> list[str]:
    return sorted(p.name for p in (ws / "conductor/tracks").iterdir() if p.is_dir())


def test_resume_does_not_plan_an_epic_again_that_the_run_it_continues_planned(tmp_path):
    """`run --resume --epic X` after a run that planned X and finished every track (a run
    killed after its last merge, before it exited, looks just like this): nothing to resume,
    no second track making the same change again. Found by killing runs at random."""
    ws = tmp_path / "ws"
    ws.mkdir()
    epic = "Add a health endpoint and its tests"
    p = clutch("run", "--epic", epic, "--workspace", str(ws), "--yes", "--json", "--pace", "0")
    assert p.returncode == 0, p.stderr[-2000:]
    before = _tracks(ws)
    assert len(before) == 1
    q = clutch("run", "--resume", "--epic", epic, "--workspace", str(ws), "--yes", "--json",
               "--pace", "0")
    assert q.returncode == 0, q.stderr[-2000:]
    assert "nothing to resume: every track is completed" in q.stderr
    assert _tracks(ws) == before
    assert [t["status"] for t in json.loads(q.stdout)["tracks"]] == ["completed"]


def test_resume_plans_the_epic_when_the_run_it_continues_stopped_before_any_track(tmp_path):
    """The interrupted run recorded its epic but was stopped during Tier 1 (no track was
    accepted): `run --resume --epic X` plans X and runs it."""
    from multi_agent_conductor import ConductorEngine
    from models import Settings
    ws = tmp_path / "ws"
    ws.mkdir()
    epic = "Add a health endpoint and its tests"
    eng = ConductorEngine(ws, Settings(offline_pace_s=0.0, git_commits=False)).start()
    try:
        eng.plan_epic(epic).result(60)       # planned, never accepted: as if killed then
    finally:
        eng.close()
    assert not (ws / "conductor/tracks").exists() or not _tracks(ws)
    q = clutch("run", "--resume", "--epic", epic, "--workspace", str(ws), "--yes", "--json",
               "--pace", "0")
    assert q.returncode == 0, q.stderr[-2000:]
    assert len(_tracks(ws)) == 1
    assert [t["status"] for t in json.loads(q.stdout)["tracks"]] == ["completed"]
