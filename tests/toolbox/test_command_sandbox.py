"""The command sandbox, attacked: escape attempts through run_shell inside the real bwrap.

Each attempt runs in a fresh arena: a git repository as the workspace (``.clutch/api.json``
holding a token, ``.clutch/config.toml``), a file and a directory beside it outside the tree,
a secret file in the host's ``/tmp`` and ``/dev/shm``, a TCP server on the host's loopback, an
abstract unix socket, a host process to kill, and an API key in the test process's
environment. After the command, the arena must be exactly as it was: nothing written outside
the tree, ``.git`` and ``.clutch`` unchanged, no secret in the output, no connection
accepted, no process left behind, the host process alive.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import socket
import subprocess
import time

import pytest

from tools import Workspace

SECRET = "sk-clutch-escape-test-" + hashlib.sha1(str(os.getpid()).encode()).hexdigest()[:16]
TOKEN = "api-token-" + hashlib.sha1(b"token" + str(os.getpid()).encode()).hexdigest()[:16]



def _tree_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
            h.update(oct(p.stat().st_mode).encode())
    return h.hexdigest()


def _procs_with(marker: str) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


class Arena:
    def __init__(self, tmp: pathlib.Path, marker: str):
        self.tmp = tmp
        self.marker = marker
        self.ws = tmp / "ws"
        self.ws.mkdir()
        git = ["git", "-C", str(self.ws), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run(["git", "init", "-q", str(self.ws)], check=True)
        (self.ws / "app.py").write_text("print('hi')\n")
        subprocess.run(git + ["add", "app.py"], check=True)
        subprocess.run(git + ["commit", "-qm", "init"], check=True)
        (self.ws / ".clutch").mkdir()
        (self.ws / ".clutch" / "api.json").write_text(f'{{"token": "{TOKEN}"}}\n')
        (self.ws / ".clutch" / "config.toml").write_text('[approvals]\nshell = "ask"\n')
        self.outside = tmp / "outside.txt"
        self.outside.write_text("untouched\n")
        self.victim = tmp / "victim"
        self.victim.mkdir()
        (self.victim / "keep.txt").write_text("keep\n")
        self.host_tmp = pathlib.Path("/tmp") / f"clutch-host-secret-{marker}"
        self.host_tmp.write_text(SECRET)
        self.host_shm = pathlib.Path("/dev/shm") / f"clutch-host-secret-{marker}"
        self.host_shm.write_text(SECRET)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(5)
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind(f"\0clutch-test-{marker}")
        self.abstract.listen(5)
        self.abstract.setblocking(False)
        self.host_proc = subprocess.Popen(["sleep", "300"])
        self.before = {"git": _tree_digest(self.ws / ".git"), "clutch": _tree_digest(self.ws / ".clutch"),
                       "tmp": sorted(p.name for p in tmp.iterdir()),
                       "host_tmp": self._host_tmp_files()}
        self.workspace = Workspace(self.ws, shell_timeout_s=20)

    def _host_tmp_files(self) -> list[str]:
        return sorted(str(p) for d in ("/tmp", "/var/tmp", "/dev/shm") for p in pathlib.Path(d).iterdir()
                      if self.marker in p.name)

    def fmt(self, command: str) -> str:
        # ESC''APED: the word is printed only when the command runs, never by echoing its line.
        command = command.replace("ESCAPED", "ESC''APED")
        return command.format(ws=self.ws, outside=self.outside, victim=self.victim,
                              tmp=self.tmp, port=self.port, marker=self.marker,
                              host_pid=self.host_proc.pid, test_pid=os.getpid(),
                              host_tmp=self.host_tmp, host_shm=self.host_shm)

    def check(self, output: str) -> None:
        assert SECRET not in output, "the API key or a host secret reached the output"
        assert TOKEN not in output, "the .clutch token reached the output"
        assert "ESCAPED" not in output, output
        assert self.outside.read_text() == "untouched\n", "a file outside the tree was written"
        assert (self.victim / "keep.txt").read_text() == "keep\n"
        assert sorted(p.name for p in self.tmp.iterdir()) == self.before["tmp"], \
            "something was created beside the workspace"
        assert self._host_tmp_files() == self.before["host_tmp"], "the host's /tmp was written"
        assert _tree_digest(self.ws / ".git") == self.before["git"], ".git was changed"
        assert _tree_digest(self.ws / ".clutch") == self.before["clutch"], ".clutch was changed"
        assert (self.ws / ".clutch" / "api.json").read_text() == f'{{"token": "{TOKEN}"}}\n'
        with pytest.raises(BlockingIOError):
            self.server.accept()  # no connection reached the host's loopback server
        with pytest.raises(BlockingIOError):
            self.abstract.accept()
        assert self.host_proc.poll() is None, "a host process was killed"
        deadline = time.monotonic() + 2
        while _procs_with(self.marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _procs_with(self.marker), "a process outlived the command"

    def close(self) -> None:
        self.host_proc.kill()
        self.host_proc.wait()
        self.server.close()
        self.abstract.close()
        for p in (self.host_tmp, self.host_shm):
            p.unlink(missing_ok=True)


@pytest.fixture
def arena(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    monkeypatch.setenv("GOOGLE_API_KEY", SECRET)
    marker = f"{os.getpid()}x{time.monotonic_ns() % 10**9}"
    a = Arena(tmp_path, marker)
    yield a
    a.close()


PY = "python3 -c"
# (name, command). Each must fail to get out; a success would print ESCAPED or change the arena.
ATTEMPTS: list[tuple[str, str]] = [
    ("write a file outside the tree", "echo pwned > {outside}"),
    ("create a file beside the tree through ..", "touch ../escaped-{marker}"),
    ("create a file beside the tree by absolute path", "touch {tmp}/escaped-{marker}"),
    ("delete a directory outside the tree", "rm -rf {victim}"),
    ("write /etc", "echo x > /etc/clutch-{marker} && echo ESCAPED"),
    ("write /usr/local/bin", "touch /usr/local/bin/clutch-{marker} && echo ESCAPED"),
    ("write the host's /tmp", "echo x > /tmp/clutch-host-w-{marker}; ls /tmp"),
    ("read a secret in the host's /tmp", "cat {host_tmp}; ls -la /tmp"),
    ("read a secret in the host's /dev/shm", "cat {host_shm}; ls /dev/shm"),
    ("write the host's /var/tmp", "touch /var/tmp/clutch-w-{marker}"),
    ("write the host's /dev/shm", "touch /dev/shm/clutch-w-{marker}"),
    ("read the parent's environ", "cat /proc/$PPID/environ | tr '\\0' '\\n'"),
    ("grep every environ for the key", "grep -a GEMINI_API_KEY= /proc/[0-9]*/environ"),
    ("read the test process's environ by pid", "cat /proc/{test_pid}/environ"),
    ("see the host's processes", "ls /proc | grep -qx {test_pid} && echo ESCAPED; ps -e -o pid,args"),
    ("read pid 1's environ", "cat /proc/1/environ"),
    ("kill -9 a host pid", "kill -9 {host_pid}; kill -9 {test_pid}"),
    ("kill -9 every process it can", "kill -9 -1; true"),
    ("connect to a host loopback port with bash", "exec 3<>/dev/tcp/127.0.0.1/{port} && echo ESCAPED"),
    ("connect to a host loopback port with python",
     PY + " \"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('ESCAPED')\""),
    ("connect to a host abstract unix socket",
     PY + " \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('\\0clutch-test-{marker}'); "
          "print('ESCAPED')\""),
    ("reach the internet", PY + " \"import socket; socket.create_connection(('1.1.1.1', 53), 2); "
                                "print('ESCAPED')\""),
    ("leave a process behind with nohup", "nohup sleep 61{marker} > /dev/null 2>&1 &"),
    ("leave a process behind with setsid", "setsid sleep 62{marker} > /dev/null 2>&1 < /dev/null &"),
    ("leave a process behind with a double fork", "( ( sleep 63{marker} > /dev/null 2>&1 & ) & )"),
    ("leave a process behind with disown", "sleep 64{marker} > /dev/null 2>&1 & disown"),
    ("leave a process behind from python",
     PY + " \"import os, subprocess; os.fork() or (os.setsid(), subprocess.Popen(['sleep', '65{marker}']))\""),
    ("read .clutch/api.json", "cat .clutch/api.json; cat {ws}/.clutch/api.json"),
    ("write .clutch/config.toml", "printf '[approvals]\\nshell = \"auto\"\\n' > .clutch/config.toml"),
    ("delete .clutch", "rm -rf .clutch"),
    ("move .clutch away", "mv .clutch moved && cat moved/api.json"),
    ("reach .clutch through a symlink", "ln -s .clutch c2 && cat c2/api.json; rm -f c2"),
    ("write .git/hooks", "printf '#!/bin/sh\\ntouch {outside}\\n' > .git/hooks/pre-commit && "
                         "chmod +x .git/hooks/pre-commit && echo ESCAPED"),
    ("write .git/config", "git config core.fsmonitor 'touch {outside}' && echo ESCAPED"),
    ("append to .git/config", "echo '[core]' >> .git/config && echo ESCAPED"),
    ("delete .git", "rm -rf .git"),
    ("move .git away", "mv .git .git2 && echo ESCAPED"),
    ("commit from inside", "git -c user.name=x -c user.email=x@x commit -q --allow-empty -m evil && echo ESCAPED"),
    ("git alias runs a command outside", "git -c 'alias.x=!touch {outside}' x"),
    ("find -exec writes outside", "find . -maxdepth 0 -exec touch {tmp}/found-{marker} \\;"),
    ("symlink to a file outside, then write", "ln -s {outside} link && echo pwned > link; rm -f link"),
    ("symlink to /etc, then write", "ln -s /etc e && touch e/clutch-{marker} && echo ESCAPED; rm -f e"),
    ("hard link to a file outside, then write", "ln {outside} hl && echo pwned >> hl && echo ESCAPED"),
    ("write through /proc/self/root", "echo pwned > /proc/self/root{outside}"),
    ("write through /proc/1/root", "echo pwned > /proc/1/root{outside}"),
    ("write through /proc/1/cwd/..", "echo pwned > /proc/1/cwd/../outside.txt"),
    ("mount a tmpfs", "mount -t tmpfs none /mnt && echo ESCAPED"),
    ("remount / read-write", "mount -o remount,bind,rw / && echo pwned > {outside}"),
    ("unshare a user namespace to remount", "unshare -Urm sh -c 'mount -o remount,bind,rw / && "
                                            "echo pwned > {outside}'"),
    ("unshare to unmount the .clutch cover", "unshare -Urm sh -c 'umount {ws}/.clutch; cat {ws}/.clutch/api.json'"),
    ("chroot", "chroot / sh -c 'echo pwned > {outside}' && echo ESCAPED"),
    ("nsenter pid 1's namespaces", "nsenter -t 1 -a true && echo ESCAPED"),
    ("read a raw disk", "ls /dev; for d in /dev/sd? /dev/vd? /dev/nvme*; do head -c 16 $d && echo ESCAPED; done; true"),
    ("read kernel messages", "head -c 100 /dev/kmsg && echo ESCAPED"),
    ("read /dev/mem", "head -c 16 /dev/mem && echo ESCAPED"),
    ("write to the cgroup tree", "echo $$ > /sys/fs/cgroup/cgroup.procs && echo ESCAPED"),
    ("install a crontab", "echo '* * * * * touch {outside}' | crontab - && echo ESCAPED"),
    ("read the home's ssh keys", "cat ~/.ssh/id_* /root/.ssh/id_* 2>/dev/null; true"),
]


def test_the_escape_suite_has_at_least_40_attempts():
    print(f"\n{len(ATTEMPTS)} escape attempts through run_shell inside bwrap")
    assert len(ATTEMPTS) >= 40
    assert len({name for name, _ in ATTEMPTS}) == len(ATTEMPTS)


@pytest.mark.parametrize("command", [c for _, c in ATTEMPTS], ids=[n for n, _ in ATTEMPTS])
def test_escape_attempt_is_refused(arena, command):
    result = arena.workspace.run_shell(arena.fmt(command), timeout=15)
    assert "timed out" not in result.error
    arena.check(result.output + result.error)


def test_the_arena_would_see_an_escape(arena):
    """The checks can fail: the same kind of write, made by the host, is caught."""
    arena.outside.write_text("changed\n")
    with pytest.raises(AssertionError, match="outside the tree"):
        arena.check("")
    arena.outside.write_text("untouched\n")
    with pytest.raises(AssertionError, match="API key"):
        arena.check(SECRET)
    none = Workspace(arena.ws, sandbox="none")
    leaked = none.run_shell(arena.fmt("echo pwned > {outside}"))
    assert leaked.ok and arena.outside.read_text() == "pwned\n"  # unsandboxed: it gets out
    arena.outside.write_text("untouched\n")


def test_inside_the_tree_work_goes_on(arena):
    """What a worker needs still works: write files, read git, run python, a loopback server."""
    r = arena.workspace.run_shell(
        "echo new > new.txt && mkdir -p pkg && echo 'x = 1' > pkg/m.py && "
        "git status --porcelain && git log --oneline | wc -l && "
        "python3 -c \"import http.server, threading, urllib.request as u; "
        "s = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler); "
        "threading.Thread(target=s.serve_forever, daemon=True).start(); "
        "print(u.urlopen(f'http://127.0.0.1:{s.server_port}/new.txt').read().decode().strip())\" && "
        "echo tmp > /tmp/scratch && cat /tmp/scratch && ls -a .clutch")
    assert r.ok, r.error + r.output
    assert "?? new.txt" in r.output and "?? pkg/" in r.output
    assert "\n1\n" in r.output  # one commit in the log
    assert "new\ntmp\n" in r.output
    assert "api.json" not in r.output
    assert (arena.ws / "new.txt").read_text() == "new\n"
    assert (arena.ws / "pkg" / "m.py").exists()
    arena.check(r.output)


def test_network_allowed_reaches_the_host_loopback(arena):
    ws = Workspace(arena.ws, sandbox_network=True)
    r = ws.run_shell(arena.fmt("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"))
    assert r.ok and "connected" in r.output
    assert "network allowed" in ws.sandbox_status().message


def test_a_git_worktree_reads_its_repository_and_cannot_write_it(arena, tmp_path):
    wt = tmp_path / "wt"
    subprocess.run(["git", "-C", str(arena.ws), "worktree", "add", "-q", "-b", "t1", str(wt)], check=True)
    main_git = _tree_digest(arena.ws / ".git")
    w = Workspace(wt, sandbox_hide=[arena.ws / ".clutch"])
    r = w.run_shell("git log --oneline | wc -l && git status --porcelain && echo x > f.txt && "
                    f"cat {arena.ws}/.clutch/api.json; "
                    "git -c user.name=x -c user.email=x@x commit -q --allow-empty -m evil && echo ESCAPED; "
                    "echo '[core]' >> .git; true")
    assert "1\n" in r.output and "ESCAPED" not in r.output and TOKEN not in r.output
    assert (wt / "f.txt").read_text() == "x\n"
    assert _tree_digest(arena.ws / ".git") == main_git
    assert (wt / ".git").read_text().startswith("gitdir: ")
    assert "[core]" not in (wt / ".git").read_text()


def test_a_hidden_path_that_holds_the_root_still_leaves_the_root_writable(tmp_path):
    """A ticket's worktree may live under the user's .clutch/: hiding .clutch keeps it usable."""
    repo = tmp_path / "repo"
    wt = repo / ".clutch" / "worktrees" / "T-1"
    wt.mkdir(parents=True)
    (repo / ".clutch" / "api.json").write_text(TOKEN)
    w = Workspace(wt, sandbox_hide=[repo / ".clutch"])
    r = w.run_shell(f"echo ok > out.txt && cat {repo}/.clutch/api.json; ls {repo}/.clutch; true")
    assert TOKEN not in r.output
    assert (wt / "out.txt").read_text() == "ok\n"


def test_a_workers_command_runs_below_the_app(arena):
    """Worker commands run at WORKER_NICENESS (what they start inherits it), sandboxed or not,
    so eight of them at once leave the app and its own git work the CPU first."""
    from toolbox.shell import WORKER_NICENESS
    for ws in (arena.workspace, Workspace(arena.ws, sandbox="none")):
        r = ws.run_shell("nice; sh -c nice")
        assert r.ok, r.error + r.output
        assert r.output.split() == [str(WORKER_NICENESS)] * 2, r.output
    assert os.getpriority(os.PRIO_PROCESS, 0) == 0          # the app itself is untouched


def test_a_workspace_given_an_earlier_probe_does_not_start_bwrap_to_probe_again(tmp_path,
                                                                             monkeypatch):
    import toolbox.workspace as workspace_mod
    first = Workspace(tmp_path, sandbox="bwrap")
    status = first.sandbox_status()
    assert status.ready, status.message
    other = tmp_path / "tree"
    other.mkdir()

    def no_probe(*a, **kw):
        raise AssertionError("bwrap was probed again")
    monkeypatch.setattr(workspace_mod, "probe", no_probe)
    tree = Workspace(other, sandbox="bwrap", probed=status)
    assert tree.sandbox_status() is status
    res = tree.run_shell("echo hi > made.txt && pwd")      # still run inside bwrap, at its root
    assert res.ok and (other / "made.txt").read_text() == "hi\n"
    with pytest.raises(ValueError, match="probed must be the SandboxStatus of a 'none'"):
        Workspace(other, sandbox="none", probed=status)
    with pytest.raises(ValueError, match="probed"):
        Workspace(other, sandbox="bwrap", probed="ready")
