"""The command sandbox: every shell command a worker runs goes through bubblewrap (``bwrap``).

What a command sees (see :func:`bwrap_argv`):

- the whole file system read-only (``--ro-bind / /``), the workspace root writable (later a
  ticket's worktree: the root is a parameter, never assumed to be the user's repository);
- ``.git`` inside the root read-only (a directory, or the file a git worktree has; the main
  repository it points to is outside the root, so read-only too): git can read, not write;
- ``.clutch`` inside the root, any ``hide`` path given, and well-known credential files of the
  user's home (``~/.ssh``, ``~/.aws``, ...) replaced by empty read-only directories or
  ``/dev/null``; fresh, empty ``/tmp``, ``/var/tmp`` and ``/run``; a minimal ``/dev``;
- a new user namespace that may create no further one (``--disable-userns``), with every
  capability dropped: no mount, no chroot, no unshare, no remount of ``/`` read-write;
- a new PID namespace with its own ``/proc``: no Clutch process is visible (its ``environ``
  holds the API key), and when the command ends or is killed, everything it started dies
  with it (``--die-with-parent``; the namespace's init dies, the kernel kills the rest);
- no network unless allowed (``--unshare-net``: a fresh loopback, up, so servers a command
  starts for itself still work; the host's loopback services are out of reach);
- a clean environment (:func:`clean_env`): PATH, locale and terminal variables only, HOME in
  the private ``/tmp``; never an API key.

Where bwrap is missing or cannot start, :func:`probe` says so in one line, and the workspace
refuses to run commands unless the settings chose ``sandbox = "none"``.

Threads: any. State: none here; the probe's result is cached by the caller (the Workspace).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Literal

SandboxMode = Literal["bwrap", "none"]
SANDBOX_MODES: tuple[str, ...] = ("bwrap", "none")

# Environment variables a command inherits; everything else (API keys included) is dropped.
# Besides PATH, locale and terminal: where toolchains live (no credentials in these).
_ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "COLORTERM",
             "NO_COLOR", "SOURCE_DATE_EPOCH", "PYENV_ROOT", "PYENV_VERSION", "VIRTUAL_ENV",
             "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYTHONPATH", "JAVA_HOME", "GOROOT",
             "GOPATH", "CARGO_HOME", "RUSTUP_HOME", "NVM_DIR")
SANDBOX_HOME = "/tmp/home"
# Credentials in the user's home a command has no business reading (its output goes to the
# model). Directories become empty read-only tmpfs, files /dev/null.
_HOME_SECRETS = (".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".config/gh",
                 ".docker", ".kube", ".netrc", ".git-credentials", ".pypirc", ".npmrc",
                 ".config/clutch")
_PROBE_TIMEOUT_S = 10.0
NOT_FOUND_MESSAGE = 'bwrap not found: commands run only with sandbox = "none"'


@dataclass(frozen=True)
class SandboxStatus:
    """What the engine, the GUI's strip and the CLI show about the command sandbox."""
    mode: str            # "bwrap" | "none": what the settings chose
    ready: bool          # True: run_shell runs commands
    message: str         # one line for people
    bwrap: str = ""      # the bwrap executable used (mode "bwrap", ready)
    disable_userns: bool = False  # this bwrap supports --disable-userns (0.8+)


def clean_env(home: str, tmpdir: str | None = None) -> dict[str, str]:
    """The environment of a command: PATH, locale and terminal only; HOME (and TMPDIR) given."""
    env = {k: v for k, v in os.environ.items()
           if k in _ENV_KEEP or (k.startswith("LC_") and k.isascii())}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env.setdefault("TERM", "dumb")
    env["HOME"] = home
    if tmpdir is not None:
        env["TMPDIR"] = tmpdir
    return env


def _inside(path: pathlib.Path, root: pathlib.Path) -> bool:
    return path == root or root in path.parents


def _home_secrets() -> list[pathlib.Path]:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    if not home or not os.path.isabs(home):
        return []
    return [pathlib.Path(home, rel) for rel in _HOME_SECRETS]


def _worktree_git_dirs(git: pathlib.Path) -> list[pathlib.Path]:
    """For a git worktree (``.git`` is a file ``gitdir: X``): X and the main repository's git
    directory it names in ``X/commondir``. [] for an ordinary repository or none."""
    try:
        if git.is_symlink() or not git.is_file() or git.stat().st_size > 4096:
            return []
        text = git.read_text("utf-8", "replace").strip()
    except OSError:
        return []
    if not text.startswith("gitdir:"):
        return []
    gitdir = pathlib.Path(text[len("gitdir:"):].strip())
    gitdir = (git.parent / gitdir) if not gitdir.is_absolute() else gitdir
    found = [gitdir]
    try:
        common = (gitdir / "commondir").read_text("utf-8", "replace").strip()
    except OSError:
        common = ""
    if common:
        found.append(pathlib.Path(common) if os.path.isabs(common) else gitdir / common)
    out: list[pathlib.Path] = []
    for d in found:
        d = d.resolve()
        if d.is_dir() and not any(d == o or o in d.parents for o in out):
            out = [o for o in out if d not in o.parents] + [d]
    return out


def bwrap_argv(bwrap: str, root: pathlib.Path, cwd: pathlib.Path, *, network: bool,
               hide: Iterable[pathlib.Path] = (), disable_userns: bool = True) -> list[str]:
    """The bwrap command line (up to the command itself) for a command run in ``cwd``.

    ``root`` is writable; ``root/.git`` read-only; ``root/.clutch``, each ``hide`` path and the
    home's credential files hidden. Mount order matters: a hidden path that holds the root
    (the root may be a worktree under the user's ``.clutch/``) is hidden before the root is
    bound, every other one after, so that neither undoes the other."""
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-user"]
    if disable_userns:
        argv.append("--disable-userns")
    argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
             "--hostname", "clutch-sandbox", "--cap-drop", "ALL"]
    if not network:
        argv.append("--unshare-net")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
             "--tmpfs", "/tmp", "--dir", SANDBOX_HOME, "--tmpfs", "/var/tmp", "--tmpfs", "/run"]
    if network:  # resolv.conf often points into /run (systemd-resolved)
        argv += ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
    before: list[str] = []
    after: list[str] = []
    ro_again: list[str] = []
    hidden = {root / ".clutch", *map(pathlib.Path, hide), *_home_secrets()}
    for path in sorted(hidden):
        if path.is_symlink():
            path = path.resolve()
        if not path.is_absolute() or path in (pathlib.Path("/"), root):
            continue
        holds_root = root != path and _inside(root, path)
        if path.is_dir() or path == root / ".clutch":
            ops = ["--tmpfs", str(path)]
            ro_again.append(str(path))
        elif path.exists():
            ops = ["--ro-bind", "/dev/null", str(path)]
        else:
            continue
        (before if holds_root else after).extend(ops)
    argv += before
    for gitdir in _worktree_git_dirs(root / ".git"):  # visible (read-only) even under /tmp
        argv += ["--ro-bind", str(gitdir), str(gitdir)]
    argv += ["--bind", str(root), str(root)]
    git = root / ".git"
    if git.is_symlink() or git.exists():
        argv += ["--ro-bind", str(git), str(git)]
    argv += after
    for path in ro_again:
        argv += ["--remount-ro", path]
    argv += ["--chdir", str(cwd)]
    return argv


def probe(mode: str, *, network: bool) -> SandboxStatus:
    """Find bwrap and start it once with the sandbox's namespaces; say what works, in one line.

    Runs a process (tens of milliseconds): call it once and keep the result."""
    if mode == "none":
        return SandboxStatus(mode="none", ready=True,
                             message='sandbox = "none": shell commands run without a sandbox, '
                                     "with your user's full access to files, processes and network")
    if mode != "bwrap":
        return SandboxStatus(mode=str(mode), ready=False,
                             message=f"unknown sandbox {mode!r}: choose \"bwrap\" or \"none\"")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SandboxStatus(mode="bwrap", ready=False, message=NOT_FOUND_MESSAGE)
    last = ""
    for disable_userns in (True, False):
        argv = [bwrap, "--die-with-parent", "--unshare-user"]
        argv += ["--disable-userns"] if disable_userns else []
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--cap-drop", "ALL"]
        argv += [] if network else ["--unshare-net"]
        argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                 "/bin/sh", "-c", "exit 0"]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=_PROBE_TIMEOUT_S, env=clean_env("/"))
        except (OSError, subprocess.TimeoutExpired) as e:
            last = str(e)
            continue
        if proc.returncode == 0:
            net = "allowed" if network else "off"
            how = "" if disable_userns else ("; this bwrap is older than 0.8: nested user "
                                             "namespaces are not blocked")
            return SandboxStatus(mode="bwrap", ready=True, bwrap=bwrap, disable_userns=disable_userns,
                                 message=f"shell commands run in bubblewrap ({bwrap}; network {net}{how})")
        said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = said[0] if said else f"exit code {proc.returncode}"
        if "disable-userns" not in last:
            break
    return SandboxStatus(mode="bwrap", ready=False, bwrap=bwrap,
                         message=(f'bwrap cannot start here ({last}): commands run only with '
                                  f'sandbox = "none"'))
