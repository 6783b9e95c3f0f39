"""The workspace sandbox: every escape attempt through every file tool and run_shell's cwd.

Layout of each test (a fresh tmp dir):

    tmp/ws/        the workspace, with symlinks that point out of it (see ``sandbox``)
    tmp/outside/   a sibling directory holding canary files

Each attempt must be refused (SandboxError from the method, ok=False "refused: ..." through
execute) AND leave no trace: the canary content never appears in any output, and the outside
tree (and /etc) is byte-for-byte unchanged, with no new files.
"""
from __future__ import annotations

import os
import pathlib
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tools
from tools import SandboxError, ToolError, Workspace, diff_preview

CANARY = "CANARY-7f3a9c-outside-secret"
PROBE = "clutch-sandbox-probe-5e1d.txt"  # a name that must never be created anywhere
PASSWD_MARK = "root:x:0:0"


def _build(tmp: pathlib.Path) -> tuple[Workspace, pathlib.Path]:
    ws_root = tmp / "ws"
    out = tmp / "outside"
    ws_root.mkdir()
    out.mkdir()
    (out / "canary.txt").write_text(CANARY + "\n")
    (out / "f.txt").write_text(CANARY + " f\n")
    (out / "d").mkdir()
    (out / "d" / "secret.txt").write_text(CANARY + " deep\n")

    (ws_root / "sub").mkdir()
    (ws_root / "sub" / "f.txt").write_text("inside text\n")
    (ws_root / "README.md").write_text("readme\n")
    (ws_root / ".git").mkdir()
    (ws_root / ".git" / "config").write_text("[core]\n\tbare = false\n")
    (ws_root / ".git" / "hooks").mkdir()
    links = {
        "link_etc": "/etc",
        "slash": "/",
        "out_dir": "../outside",
        "out_file": "../outside/canary.txt",
        "abs_out_file": str(out / "canary.txt"),
        "abs_out_dir": str(out),
        "dangle_out": "../outside/" + PROBE,
        "dangle_abs": str(out / "newdir" / PROBE),
        "sub/inner": "../../outside",
        "hop1": "hop2",
        "hop2": "out_dir",
        "up": "..",
        "dotdot_link": "./sub/../../outside",
        "loop1": "loop2",
        "loop2": "loop1",
        "gitlink": ".git",
        "sub/gitconf": "../.git/config",
    }
    for name, target in links.items():
        os.symlink(target, ws_root / name)
    return Workspace(ws_root, shell_timeout_s=5), out


def _capture(ws: Workspace, out: pathlib.Path) -> dict:
    return {"out": _snapshot(out), "ws": _snapshot(ws.root), "etc": set(os.listdir("/etc"))}


def _assert_untouched(before: dict, ws: Workspace, out: pathlib.Path, *, workspace_too: bool) -> None:
    assert _snapshot(out) == before["out"], "something outside the workspace was written"
    assert set(os.listdir("/etc")) == before["etc"]
    assert not pathlib.Path("/", PROBE).exists()
    assert not pathlib.Path("/etc", PROBE).exists()
    if workspace_too:
        assert _snapshot(ws.root) == before["ws"], "a refused attempt changed the workspace"


@pytest.fixture(scope="module")
def _shared(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def refused_only(_shared):
    """The shared layout, for attempts that must all be refused: after each test, both the
    outside tree and the workspace are checked to be exactly as they were."""
    ws, out = _shared
    before = _capture(ws, out)
    yield ws, out
    _assert_untouched(before, ws, out, workspace_too=True)


@pytest.fixture
def sandbox(tmp_path: pathlib.Path):
    """A fresh layout, for tests that change the workspace (races, writes that succeed)."""
    ws, out = _build(tmp_path)
    before = _capture(ws, out)
    yield ws, out
    _assert_untouched(before, ws, out, workspace_too=False)


def _snapshot(root: pathlib.Path) -> dict[str, tuple]:
    snap: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = pathlib.Path(dirpath, name)
            st_ = p.lstat()
            content = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            snap[str(p.relative_to(root))] = (st_.st_mode, st_.st_size, st_.st_mtime_ns, content)
    return snap


def _no_leak(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text
        assert PASSWD_MARK not in text


# ---------------------------------------------------------------------------------------------
# The escape attempts
# ---------------------------------------------------------------------------------------------

LEXICAL = [
    "..",
    "../..",
    "a/../../x",
    "../outside/canary.txt",
    "./../outside/canary.txt",
    "sub/../../outside/canary.txt",
    "sub/./../..",
    "{OUT}/canary.txt",              # absolute path to the canary
    "/etc/passwd",
    "//etc/passwd",
    "/",
    "~",
    "~/canary.txt",
    "~root",
    "~root/.bashrc",
    "sub\x00/../../outside",
    "canary.txt\x00",
    "a" * 300,                       # component > 255 bytes
    "sub/" + "é" * 128,              # 256 bytes in UTF-8
    "a/" * 2500,                     # 5000-byte path
    "\udcff",                        # surrogate-escaped (non-UTF-8) name
    "sub/\udcffname",
    "C:\\Windows",
    "C:/Windows/win.ini",
    "c:",
    "..\\..\\etc",
    "sub\\..\\..\\outside\\canary.txt",
    "\\\\srv\\share",
    "\\etc\\passwd",
]

SYMLINKED = [
    "link_etc/passwd",               # symlink to /etc
    "link_etc",
    "slash/etc/passwd",              # symlink to /
    "out_dir",                       # symlink to a directory outside
    "out_dir/canary.txt",            # ... and a file under it
    "out_dir/d/secret.txt",
    "out_file",                      # symlink to a file outside
    "abs_out_file",                  # absolute symlink to a file outside
    "abs_out_dir/canary.txt",
    "dangle_out",                    # dangling symlink out (write must not create the target)
    "dangle_abs",
    "sub/inner/canary.txt",          # symlinked parent directory, one level down
    "hop1/canary.txt",               # chain: inside -> inside -> outside
    "up/outside/canary.txt",         # symlink to the workspace's parent
    "dotdot_link/canary.txt",        # relative target climbing out through '..'
    "loop1",                         # symlink loop
]

ESCAPES = LEXICAL + SYMLINKED
assert len(set(ESCAPES)) >= 35


def _probe_variant(path: str) -> str:
    """For writes: never aim at a real system file, even if the sandbox were broken."""
    return path.replace("passwd", PROBE).replace(".bashrc", PROBE).replace("win.ini", PROBE)


def _call(ws: Workspace, out: pathlib.Path, tool: str, path: str):
    """Call the tool directly; return the text it produced (if it did not raise)."""
    if tool == "read_file":
        return ws.read_file(path)
    if tool == "list_dir":
        return ws.list_dir(path)
    if tool == "search_files":
        return ws.search_files("CANARY|root:", path)
    if tool == "write_file":
        return ws.write_file(_probe_variant(path), "PWNED " + CANARY[::-1])
    if tool == "edit_file":
        return ws.edit_file(path, "CANARY", "PWNED")
    if tool == "run_shell":
        return ws.run_shell("cat canary.txt f.txt passwd 2>&1; ls -a", cwd=path).output
    raise AssertionError(tool)


def _args(tool: str, path: str) -> dict:
    return {
        "read_file": {"path": path},
        "list_dir": {"path": path},
        "search_files": {"pattern": "CANARY|root:", "path": path},
        "write_file": {"path": _probe_variant(path), "content": "PWNED"},
        "edit_file": {"path": path, "old": "CANARY", "new": "PWNED"},
        "run_shell": {"command": "cat canary.txt f.txt passwd 2>&1; ls -a", "cwd": path},
    }[tool]


TOOLS = ["read_file", "list_dir", "search_files", "write_file", "edit_file", "run_shell"]


def _ids(paths):
    return [repr(p)[:40] for p in paths]


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("raw", ESCAPES, ids=_ids(ESCAPES))
def test_escape_is_refused_and_leaves_no_trace(refused_only, tool, raw):
    ws, out = refused_only
    path = raw.replace("{OUT}", str(out))
    with pytest.raises(SandboxError) as info:
        text = _call(ws, out, tool, path)
        _no_leak(text)  # only reached if the sandbox failed to refuse
    message = str(info.value)
    assert len(message) > 20
    _no_leak(message)

    result = ws.execute(tool, _args(tool, path))
    assert result.ok is False
    assert result.error.startswith("refused: ")
    assert result.exit_code is None  # run_shell never started
    _no_leak(result.output, result.error)

    if tool in ("write_file", "edit_file"):  # the approval dialog's preview reads nothing outside
        preview = diff_preview(ws, tool, _args(tool, path))
        assert preview.startswith(f"cannot preview {tool}: refused: ")
        _no_leak(preview)


def test_escape_messages_say_what_is_wrong(refused_only):
    ws, out = refused_only
    expected = {
        "../x": "'..'",
        "/etc/passwd": "absolute",
        "~root": "home directories",
        "a\x00b": "NUL byte",
        "a" * 300: "limit is 255",
        "a/" * 2500: "limit is 4096",
        "\udcff": "not valid UTF-8",
        "C:\\Windows": "backslash",
        "C:/Windows": "Windows drive",
        "out_dir/canary.txt": "'out_dir' is a symbolic link to '../outside', which is outside the workspace",
        "sub/inner/canary.txt": "'sub/inner' is a symbolic link",
        "link_etc": "'/etc'",
        "loop1": "too many levels of symbolic links",
        "": "empty",
    }
    for path, fragment in expected.items():
        with pytest.raises(SandboxError) as info:
            ws.read_file(path)
        assert fragment in str(info.value), (path, str(info.value))


def test_resolve_refuses_the_same_escapes(refused_only):
    ws, out = refused_only
    for raw in ESCAPES:
        with pytest.raises(SandboxError):
            ws.resolve(raw.replace("{OUT}", str(out)))


# ---------------------------------------------------------------------------------------------
# .git is read-only for workers
# ---------------------------------------------------------------------------------------------

GIT_WRITES = [
    ".git/config",
    ".GIT/config",
    ".Git/hooks/pre-commit",
    ".git/new-file",
    ".git",
    "sub/.git/config",
    ".git./config",                  # Windows drops trailing dots
    ".g\u200cit/config",             # HFS+ ignores zero-width non-joiners
    "GIT~1/config",                  # 8.3 short name on NTFS
    "gitlink/config",                # a symlink inside the workspace that leads into .git
    "sub/gitconf",                   # a symlink to .git/config
]


@pytest.mark.parametrize("path", GIT_WRITES, ids=_ids(GIT_WRITES))
def test_writing_inside_git_is_refused(refused_only, path):
    ws, _out = refused_only
    git_dir = ws.root / ".git"
    before = _snapshot(git_dir)
    with pytest.raises(SandboxError, match=r"\.git.*workers may not write git's internal files"):
        ws.write_file(path, "[core]\n\thooksPath = /tmp/evil\n")
    with pytest.raises(SandboxError, match=r"\.git"):
        ws.edit_file(path, "bare = false", "bare = true")
    r = ws.execute("write_file", {"path": path, "content": "x"})
    assert not r.ok and r.error.startswith("refused: ") and ".git" in r.error
    assert diff_preview(ws, "edit_file", {"path": path, "old": "a", "new": "b"}).startswith(
        "cannot preview edit_file: refused:")
    assert _snapshot(git_dir) == before
    assert not (ws.root / "sub" / ".git").exists()
    assert not (ws.root / ".git.").exists() and not (ws.root / "GIT~1").exists()


def test_reading_git_stays_allowed(sandbox):
    ws, _out = sandbox
    assert "bare = false" in ws.read_file(".git/config")
    assert "config" in ws.list_dir(".git")
    assert ws.run_shell("ls", cwd=".git").ok


# ---------------------------------------------------------------------------------------------
# Symlinks that stay inside are followed, safely
# ---------------------------------------------------------------------------------------------

def test_symlinks_inside_the_workspace_are_followed(sandbox):
    ws, _out = sandbox
    os.symlink("sub/f.txt", ws.root / "inner_file")
    os.symlink("sub", ws.root / "inner_dir")
    os.symlink(str(ws.root / "sub" / "f.txt"), ws.root / "abs_inner_file")
    assert ws.read_file("inner_file") == "inside text\n"
    assert ws.read_file("abs_inner_file") == "inside text\n"
    assert ws.read_file("inner_dir/f.txt") == "inside text\n"
    assert "f.txt" in ws.list_dir("inner_dir")
    assert ws.run_shell("cat f.txt", cwd="inner_dir").output == "inside text\n"
    assert ws.resolve("inner_dir/f.txt") == ws.root / "sub" / "f.txt"
    out = ws.write_file("inner_file", "changed\n")
    assert "through a symlink: sub/f.txt" in out
    assert (ws.root / "inner_file").is_symlink()
    assert (ws.root / "sub" / "f.txt").read_text() == "changed\n"
    ws.edit_file("inner_dir/f.txt", "changed", "edited")
    assert (ws.root / "sub" / "f.txt").read_text() == "edited\n"


def test_search_does_not_follow_symlinks(sandbox):
    ws, _out = sandbox
    out = ws.search_files("CANARY|root:|inside")
    _no_leak(out)
    assert "sub/f.txt:1: inside text" in out
    assert "symlink(s) not followed" in out


def test_list_dir_shows_outside_links_without_following_them(sandbox):
    ws, _out = sandbox
    listing = ws.list_dir(".")
    assert "out_dir -> ../outside" in listing
    _no_leak(listing)


# ---------------------------------------------------------------------------------------------
# Time-of-check / time-of-use: a component swapped for a symlink between check and use
# ---------------------------------------------------------------------------------------------

def _swap_for_symlink(victim: pathlib.Path, target: pathlib.Path) -> None:
    victim.rename(victim.with_name(victim.name + ".moved"))
    os.symlink(target, victim)


def test_the_race_is_real_for_a_naive_resolve_then_open(sandbox):
    """The attack the walk defends against: resolve() then open() is fooled."""
    ws, out = sandbox
    checked = ws.resolve("sub/f.txt")
    assert checked == ws.root / "sub" / "f.txt"
    _swap_for_symlink(ws.root / "sub", out)
    assert CANARY in checked.read_text()          # a naive tool would have leaked this
    with pytest.raises(SandboxError, match="'sub' is a symbolic link"):
        ws.read_file("sub/f.txt")


RACE_CALLS = {
    "read_file": lambda ws: ws.read_file("sub/f.txt"),
    "list_dir": lambda ws: ws.list_dir("sub/"),
    "search_files": lambda ws: ws.search_files("CANARY|inside", "sub"),
    "write_file": lambda ws: ws.write_file("sub/f.txt", "PWNED"),
    "write_file_new_dirs": lambda ws: ws.write_file("sub/new/deeper/" + PROBE, "PWNED"),
    "edit_file": lambda ws: ws.edit_file("sub/f.txt", "CANARY", "PWNED"),
    "run_shell": lambda ws: ws.run_shell("cat f.txt; touch " + PROBE, cwd="sub"),
    "diff_preview": lambda ws: _raise_if_refused(diff_preview(
        ws, "edit_file", {"path": "sub/f.txt", "old": "CANARY", "new": "x"})),
}


def _raise_if_refused(text: str) -> str:
    if "refused:" in text:
        raise SandboxError(text)
    return text


@pytest.mark.parametrize("tool", list(RACE_CALLS))
def test_directory_swapped_for_a_symlink_between_check_and_use(sandbox, monkeypatch, tool):
    ws, out = sandbox
    swaps: list[tuple] = []

    def hook(parent, name, action):
        # 'sub' has been checked (lexically, and for the final component by lstat); swap it
        # for a symlink to the outside directory right before it is opened.
        if name == "sub" and not swaps:
            _swap_for_symlink(ws.root / "sub", out)
            swaps.append((parent, name, action))

    monkeypatch.setattr(ws, "_between_check_and_use", hook)
    with pytest.raises(SandboxError, match="'sub' is a symbolic link to .*outside the workspace"):
        _no_leak(RACE_CALLS[tool](ws))
    assert swaps, "the hook never ran: the test did not exercise the race"
    assert (ws.root / "sub").is_symlink()
    assert not (out / "new").exists() and not (out / PROBE).exists()


def test_directory_swapped_during_a_recursive_search(sandbox, monkeypatch):
    ws, out = sandbox
    swaps = []

    def hook(parent, name, action):
        if name == "sub" and action == "open directory" and not swaps:
            _swap_for_symlink(ws.root / "sub", out)
            swaps.append(name)

    monkeypatch.setattr(ws, "_between_check_and_use", hook)
    text = ws.search_files("CANARY|inside|root:", ".")
    assert swaps
    _no_leak(text)
    assert "unreadable: sub/" in text  # the swapped directory is reported, not followed


def test_final_file_swapped_for_a_symlink_before_read(sandbox, monkeypatch):
    ws, out = sandbox
    swaps = []

    def hook(parent, name, action):
        if name == "f.txt" and action == "open" and not swaps:
            _swap_for_symlink(ws.root / "sub" / "f.txt", out / "canary.txt")
            swaps.append(name)

    monkeypatch.setattr(ws, "_between_check_and_use", hook)
    with pytest.raises(SandboxError, match="'sub/f.txt' is a symbolic link"):
        _no_leak(ws.read_file("sub/f.txt"))
    assert swaps


def test_final_file_swapped_for_a_symlink_before_write_replaces_the_link_only(sandbox, monkeypatch):
    ws, out = sandbox
    swaps = []

    def hook(parent, name, action):
        if name == "f.txt" and action == "replace" and not swaps:
            _swap_for_symlink(ws.root / "sub" / "f.txt", out / "f.txt")
            swaps.append(name)

    monkeypatch.setattr(ws, "_between_check_and_use", hook)
    ws.write_file("sub/f.txt", "new content\n")
    assert swaps
    target = ws.root / "sub" / "f.txt"
    assert not target.is_symlink() and target.read_text() == "new content\n"
    # (the fixture checks outside/f.txt is unchanged)


def test_final_file_swapped_before_edit_replaces_the_link_only(sandbox, monkeypatch):
    ws, out = sandbox
    swaps = []

    def hook(parent, name, action):
        if name == "f.txt" and action == "replace" and not swaps:
            _swap_for_symlink(ws.root / "sub" / "f.txt", out / "f.txt")
            swaps.append(name)

    monkeypatch.setattr(ws, "_between_check_and_use", hook)
    ws.edit_file("sub/f.txt", "inside", "edited")
    assert swaps
    assert (ws.root / "sub" / "f.txt").read_text() == "edited text\n"


def test_an_attacker_who_keeps_swapping_never_gets_through(sandbox, monkeypatch):
    ws, out = sandbox
    calls = []

    def hook(parent, name, action):
        calls.append(name)
        victim = ws.root / "sub"
        if victim.is_symlink():
            victim.unlink()
            victim.mkdir(exist_ok=True)
            (victim / "f.txt").write_text("inside text\n")
        else:
            os.rename(victim, ws.root / f"sub.moved{len(calls)}")
            os.symlink(out, victim)

    monkeypatch.setattr(ws, "_between_check_and_use", hook)
    for call in RACE_CALLS.values():
        try:
            text = call(ws)
        except (SandboxError, ToolError) as e:
            text = str(e)
        _no_leak(text if isinstance(text, str) else text.output)
    assert calls


# ---------------------------------------------------------------------------------------------
# Properties: whatever the path, what is touched stays inside
# ---------------------------------------------------------------------------------------------

TOKENS = ["..", ".", "", "sub", "out_dir", "up", "f.txt", "canary.txt", "~", "C:", "\\", "..\\",
          ".git", "link_etc", "hop1", "\x00", "a"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6), lead=st.sampled_from(["", "/"]))
def test_any_path_resolves_inside_or_is_refused(sandbox, parts, lead):
    ws, _out = sandbox
    path = lead + "/".join(parts)
    try:
        resolved = ws.resolve(path)
    except SandboxError:
        resolved = None
    if resolved is not None:
        assert resolved == ws.root or ws.root in resolved.parents
    for call in (lambda: ws.read_file(path), lambda: ws.list_dir(path),
                 lambda: ws.search_files("CANARY|root:", path)):
        try:
            text = call()
        except (SandboxError, ToolError):
            continue
        _no_leak(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=string.ascii_letters + "./\\~:\x00é\udcff", min_size=1, max_size=30))
def test_any_write_lands_inside_or_is_refused(sandbox, name):
    ws, _out = sandbox
    try:
        ws.write_file(name, "data")
    except (SandboxError, ToolError):
        return
    resolved = ws.resolve(name)
    assert ws.root in resolved.parents
    assert resolved.read_text() == "data"


def test_module_exposes_the_hook_as_a_no_op():
    assert tools.Workspace._between_check_and_use(None, (), "x", "open") is None
