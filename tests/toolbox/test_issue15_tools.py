"""Issue 15's findings that live in the tools layer, each with a test that failed before.

1 (search freezes the app), 3 (the key through /proc: see test_command_sandbox.py),
4 (.clutch open to the worker), 5 (the model picks the timeout; cancel waits), 7 (background
processes survive), 8 (read_file allocates the whole line); and what happens without bwrap.
"""
from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest

from tools import NOT_FOUND_MESSAGE, SandboxError, ToolError, Workspace

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    r = tmp_path / "ws"
    r.mkdir()
    (r / "README.md").write_text("The quick brown fox jumps over the lazy dog again and again, all days.\n")
    (r / ".clutch").mkdir()
    (r / ".clutch" / "api.json").write_text('{"token": "live-token-123"}\n')
    (r / ".clutch" / "config.toml").write_text('[approvals]\nshell = "ask"\n')
    return r


# -- 1: one search freezes the whole app ------------------------------------------------------

def test_a_catastrophic_pattern_returns_at_once(root):
    """Run in a child process with a timeout of its own: a backtracking engine would hold the
    GIL, and no in-process timeout could stop it."""
    line = (root / "README.md").read_text().strip()
    assert len(line) == 70 and line.endswith(".")
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from tools import Workspace; "
            "t = time.monotonic(); out = Workspace(sys.argv[2]).execute('search_files', "
            "{'pattern': r'^(\\w+\\s?)*$', 'path': 'README.md'}); "
            "print(out.ok, repr(out.output[:60]), round(time.monotonic() - t, 3))")
    proc = subprocess.run([sys.executable, "-c", code, str(REPO), str(root)],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    ok, _, seconds = proc.stdout.rsplit(" ", 2)
    assert ok.startswith("True") and "no matches" in proc.stdout
    assert float(seconds) < 1.0


def test_an_unsupported_pattern_is_a_clear_tool_error(root):
    ws = Workspace(root)
    r = ws.execute("search_files", {"pattern": r"(fox)\s+\1"})
    assert not r.ok and "not supported" in r.error and "backreferences" in r.error
    r = ws.execute("search_files", {"pattern": r"(?<=quick )brown"})
    assert not r.ok and "lookarounds" in r.error
    assert ws.execute("search_files", {"pattern": r"qu\w+k\s+br[aeiou]wn"}).output.startswith("README.md:1:")


def test_very_long_lines_are_searched_up_to_a_bound(root):
    (root / "long.txt").write_text("x" * 50_000 + "NEEDLE\nshort NEEDLE\n")
    out = Workspace(root).search_files("NEEDLE", "long.txt")
    assert out.splitlines()[0] == "long.txt:2: short NEEDLE"
    assert "1 line(s) longer than 10000 characters searched in their first 10000 characters only" in out


# -- 4: .clutch is open to the worker ----------------------------------------------------------

@pytest.mark.parametrize("name, args", [
    ("read_file", {"path": ".clutch/api.json"}),
    ("read_file", {"path": "./.clutch/api.json"}),
    ("read_file", {"path": ".CLUTCH/api.json"}),
    ("list_dir", {"path": ".clutch"}),
    ("search_files", {"pattern": "token", "path": ".clutch"}),
    ("search_files", {"pattern": "token", "path": ".clutch/api.json"}),
    ("write_file", {"path": ".clutch/config.toml", "content": "[approvals]\nshell = 'auto'\n"}),
    ("write_file", {"path": ".clutch/new.toml", "content": "x"}),
    ("edit_file", {"path": ".clutch/config.toml", "old": "ask", "new": "auto"}),
    ("run_shell", {"command": "true", "cwd": ".clutch"}),
])
def test_clutch_dir_is_off_limits_to_every_tool(root, name, args):
    r = Workspace(root).execute(name, args)
    assert not r.ok and r.error.startswith("refused:") and ".clutch" in r.error
    assert "off limits" in r.error
    assert (root / ".clutch" / "config.toml").read_text() == '[approvals]\nshell = "ask"\n'
    assert not (root / ".clutch" / "new.toml").exists()


def test_clutch_dir_through_a_symlink_is_refused_and_skipped_by_search(root):
    (root / "cfg").symlink_to(".clutch")
    ws = Workspace(root)
    with pytest.raises(SandboxError, match="off limits"):
        ws.read_file("cfg/api.json")
    out = ws.search_files("token")
    assert "live-token" not in out and "no matches" in out
    assert ".clutch (Clutch's own files) not searched" in out


# -- 5: the model picks the timeout; cancel waits for the command ------------------------------

@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_a_model_cannot_lengthen_the_timeout(tmp_path, mode):
    ws = Workspace(tmp_path, shell_timeout_s=0.5, sandbox=mode)
    start = time.monotonic()
    r = ws.execute("run_shell", {"command": "sleep 20", "timeout": 86400})
    assert time.monotonic() - start < 3
    assert not r.ok and "timed out after 0.5s" in r.error
    assert r.timeout_s == 0.5 and r.to_dict()["timeout_s"] == 0.5
    assert "asked for a timeout of 86400s; the workspace's limit is 0.5s" in r.output
    shorter = ws.execute("run_shell", {"command": "echo hi", "timeout": 0.25})
    assert shorter.ok and shorter.timeout_s == 0.25 and "asked for" not in shorter.output


@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_cancel_ends_the_whole_tree_within_a_second(tmp_path, mode):
    ws = Workspace(tmp_path, shell_timeout_s=60, sandbox=mode)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    start = time.monotonic()
    r = ws.execute("run_shell", {"command": "sleep 25 & sleep 26; echo never"}, cancel=cancel)
    took = time.monotonic() - start
    assert took < 1.5, f"cancel took {took:.2f}s after 0.5s"
    assert not r.ok and "cancelled" in r.error and "never" not in r.output
    already = ws.run_shell("echo no", cancel=cancel)
    assert not already.ok and "before it started" in already.error


# -- 7: background processes survive -----------------------------------------------------------

def _alive_with(marker: str) -> bool:
    for entry in pathlib.Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("mode, how", [("bwrap", "nohup"), ("bwrap", "setsid"), ("none", "nohup"),
                                       ("none", "&")])
def test_background_processes_do_not_outlive_the_command(tmp_path, mode, how):
    marker = f"61.{os.getpid()}{time.monotonic_ns() % 10**6}"
    prefix = "" if how == "&" else how + " "
    r = Workspace(tmp_path, sandbox=mode).run_shell(f"{prefix}sleep {marker} >/dev/null 2>&1 & echo started")
    assert r.ok and r.output == "started\n"
    deadline = time.monotonic() + 2
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive_with(marker)


# -- 8: read_file allocates the whole line -----------------------------------------------------

def test_read_file_on_a_200_mib_line_holds_only_what_it_returns(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.write(b"a" * (1 << 20))
        f.truncate(200 * (1 << 20))  # sparse: 200 MiB on one line, no disk spent
    ws = Workspace(tmp_path)
    tracemalloc.start()
    try:
        out = ws.read_file("big.txt")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.startswith("a" * 20_000 + "\n[showing lines 1-1")
    assert "line 1 was cut to 20000 characters" in out
    assert "209715200 bytes in all" in out
    assert peak < 12 * (1 << 20), f"read_file peaked at {peak / (1 << 20):.0f} MiB"


def test_read_file_still_counts_lines_of_an_ordinary_file(tmp_path):
    (tmp_path / "f.txt").write_text("".join(f"line {i}\n" for i in range(5000)))
    out = Workspace(tmp_path).read_file("f.txt", offset=10, limit=5)
    assert out == "".join(f"line {i}\n" for i in range(10, 15)) + \
        "[showing lines 11-15 of 5000; call read_file with offset=15 to read on]"


# -- without bwrap -----------------------------------------------------------------------------

def test_without_bwrap_commands_are_refused_unless_sandbox_none(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sleep", "echo"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else f"/bin/{tool}")
    monkeypatch.setenv("PATH", str(bin_dir))
    ws = Workspace(tmp_path)
    status = ws.sandbox_status()
    assert not status.ready and status.message == NOT_FOUND_MESSAGE
    assert status.message == 'bwrap not found: commands run only with sandbox = "none"'
    r = ws.execute("run_shell", {"command": f"touch {tmp_path}/ran"})
    assert not r.ok and NOT_FOUND_MESSAGE in r.error and not (tmp_path / "ran").exists()
    none = Workspace(tmp_path, sandbox="none")
    assert none.sandbox_status().ready and "without a sandbox" in none.sandbox_status().message
    assert none.run_shell("echo ran").output == "ran\n"


def test_a_bwrap_that_cannot_start_is_reported_with_its_reason(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ws = Workspace(tmp_path)
    status = ws.sandbox_status()
    assert not status.ready
    assert status.message == ("bwrap cannot start here (bwrap: setting up uid map: Permission denied): "
                              'commands run only with sandbox = "none"')
    assert ws.sandbox_status() is status  # probed once, cached on the instance
    with pytest.raises(ToolError, match="cannot start here"):
        ws.run_shell("true")


def test_bad_sandbox_settings_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="sandbox must be one of 'bwrap', 'none', got 'docker'"):
        Workspace(tmp_path, sandbox="docker")
    with pytest.raises(ValueError, match="sandbox_hide takes absolute paths"):
        Workspace(tmp_path, sandbox_hide=["relative/.clutch"])
    with pytest.raises(ValueError, match="sandbox_network must be true or false"):
        Workspace(tmp_path, sandbox_network="yes")


def test_settings_carry_the_sandbox_choice():
    from models import Settings
    assert Settings().sandbox == "bwrap" and Settings().sandbox_network is False
    assert Settings(sandbox="none").sandbox == "none"
    with pytest.raises(ValueError):
        Settings(sandbox="off")


def test_a_root_inside_a_clutch_dir_is_still_usable(tmp_path):
    """A ticket's worktree may live under the user's .clutch/: only components below the
    root are checked, so its own files stay reachable while its .clutch stays off limits."""
    wt = tmp_path / "repo" / ".clutch" / "worktrees" / "T-1"
    wt.mkdir(parents=True)
    ws = Workspace(wt)
    assert ws.write_file("src/a.py", "x = 1\n") == "wrote 6 bytes to src/a.py"
    assert ws.read_file("src/a.py") == "x = 1\n"
    with pytest.raises(SandboxError, match="off limits"):
        ws.write_file(".clutch/config.toml", "")
