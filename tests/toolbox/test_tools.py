"""The worker tools: happy paths, clear errors, execute(), diff_preview, specs, GitRepo."""
from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
import time

import pytest

import tools
from conftest import run_threads
from tools import (TOOL_SPECS, GitRepo, SandboxError, ToolError, ToolResult, ToolSpec, Workspace,
                   diff_preview, tool_spec)


@pytest.fixture
def ws(tmp_path: pathlib.Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("import os\n\ndef main():\n    return 42\n")
    (root / "src" / "util.py").write_text("def helper():\n    return 'x'\n")
    (root / "README.md").write_text("# Title\nhello world\n")
    (root / "empty.txt").write_text("")
    return Workspace(root, shell_timeout_s=10, output_limit=1000)


# ---------------------------------------------------------------------------------------------
# specs and results
# ---------------------------------------------------------------------------------------------

def test_tool_specs_names_kinds_and_order():
    assert [s.name for s in TOOL_SPECS] == ["read_file", "list_dir", "search_files", "write_file",
                                            "edit_file", "run_shell"]
    assert [s.kind for s in TOOL_SPECS] == ["read", "read", "read", "write", "write", "shell"]
    assert [s.mutating for s in TOOL_SPECS] == [False, False, False, True, True, True]
    assert isinstance(TOOL_SPECS, tuple)


@pytest.mark.parametrize("spec", TOOL_SPECS, ids=lambda s: s.name)
def test_tool_spec_json_schema_shape(spec: ToolSpec):
    params = spec.parameters
    assert params["type"] == "object"
    assert isinstance(params["properties"], dict) and params["properties"]
    assert set(params["required"]) <= set(params["properties"])
    for name, prop in params["properties"].items():
        assert prop["type"] in ("string", "integer", "number"), name
        assert prop["description"].strip(), name
    assert spec.description.strip()
    json.dumps(params)  # serialisable as is, for the providers


def test_tool_spec_required_fields():
    required = {s.name: s.parameters["required"] for s in TOOL_SPECS}
    assert required == {
        "read_file": ["path"], "list_dir": [], "search_files": ["pattern"],
        "write_file": ["path", "content"], "edit_file": ["path", "old", "new"],
        "run_shell": ["command"],
    }
    assert list(tool_spec("read_file").parameters["properties"]) == ["path", "offset", "limit"]
    assert list(tool_spec("run_shell").parameters["properties"]) == ["command", "cwd", "timeout"]


def test_tool_spec_unknown_name_is_a_clear_key_error():
    with pytest.raises(KeyError, match="unknown tool 'frobnicate'.*read_file"):
        tool_spec("frobnicate")


def test_tool_result_to_dict_omits_exit_code_when_none():
    assert ToolResult(ok=True, output="x").to_dict() == {"ok": True, "output": "x", "error": ""}
    assert ToolResult(ok=False, error="e", exit_code=2).to_dict() == {
        "ok": False, "output": "", "error": "e", "exit_code": 2}
    assert ToolResult(ok=True, exit_code=0).to_dict()["exit_code"] == 0


def test_workspace_root_must_exist_and_be_a_directory(tmp_path):
    with pytest.raises(SandboxError, match="cannot be used"):
        Workspace(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(SandboxError, match="not a directory"):
        Workspace(tmp_path / "f")
    assert Workspace(str(tmp_path)).root == tmp_path.resolve()
    with pytest.raises(ValueError, match="shell_timeout_s"):
        Workspace(tmp_path, shell_timeout_s=0)


# ---------------------------------------------------------------------------------------------
# read_file
# ---------------------------------------------------------------------------------------------

def test_read_file_returns_the_text(ws):
    assert ws.read_file("src/app.py") == "import os\n\ndef main():\n    return 42\n"
    assert ws.read_file("./src//app.py") == ws.read_file("src/app.py")
    assert ws.read_file("empty.txt") == ""


def test_read_file_offset_and_limit(ws):
    (ws.root / "n.txt").write_text("".join(f"line{i}\n" for i in range(10)))
    out = ws.read_file("n.txt", offset=2, limit=3)
    assert out.startswith("line2\nline3\nline4\n")
    assert "[showing lines 3-5 of 10; call read_file with offset=5 to read on]" in out
    assert ws.read_file("n.txt", offset=8) == "line8\nline9\n"
    with pytest.raises(ToolError, match="past the end.*10 lines"):
        ws.read_file("n.txt", offset=10)
    with pytest.raises(ToolError, match="limit"):
        ws.read_file("n.txt", limit=0)
    with pytest.raises(ToolError, match="offset"):
        ws.read_file("n.txt", offset=-1)


def test_read_file_clamps_to_output_limit_with_a_note(ws):
    (ws.root / "wide.txt").write_text(("y" * 99 + "\n") * 50)  # 5000 chars, limit 1000
    out = ws.read_file("wide.txt")
    assert out.count("y" * 99) == 10
    assert "showing lines 1-10 of 50; call read_file with offset=10" in out
    (ws.root / "one.txt").write_text("z" * 5000)
    out = ws.read_file("one.txt")
    assert "line 1 was cut to 1000 characters" in out
    assert out.count("z") == 1000


def test_read_file_missing_and_directory_and_binary(ws):
    with pytest.raises(ToolError, match="no such file or directory: 'src/nope.py'"):
        ws.read_file("src/nope.py")
    with pytest.raises(ToolError, match="no such directory: 'nodir'"):
        ws.read_file("nodir/x.py")
    with pytest.raises(ToolError, match="is a directory"):
        ws.read_file("src")
    with pytest.raises(ToolError, match="'README.md' is not a directory"):
        ws.read_file("README.md/x")
    (ws.root / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02" * 10)
    with pytest.raises(ToolError, match="binary file"):
        ws.read_file("blob.bin")
    r = ws.execute("read_file", {"path": "blob.bin"})
    assert not r.ok and "binary" in r.error


def test_read_file_invalid_utf8_is_replaced_not_fatal(ws):
    (ws.root / "latin.txt").write_bytes(b"caf\xe9\n")
    assert ws.read_file("latin.txt") == "caf\ufffd\n"


# ---------------------------------------------------------------------------------------------
# list_dir
# ---------------------------------------------------------------------------------------------

def test_list_dir_sorted_dirs_marked_nothing_hidden(ws):
    (ws.root / ".hidden").write_text("h")
    os.symlink("src/app.py", ws.root / "link")
    assert ws.list_dir().split("\n") == [
        ".hidden", "README.md", "empty.txt", "link -> src/app.py", "src/"]
    assert ws.list_dir("src") == "app.py\nutil.py"
    (ws.root / "void").mkdir()
    assert "empty directory" in ws.list_dir("void")


def test_list_dir_errors(ws):
    with pytest.raises(ToolError, match="not a directory"):
        ws.list_dir("README.md")
    with pytest.raises(ToolError, match="no such file or directory"):
        ws.list_dir("nope")


def test_list_dir_clamps_and_says_how_many_were_left_out(ws):
    big = ws.root / "big"
    big.mkdir()
    for i in range(300):
        (big / f"file_{i:04d}.txt").write_text("")
    out = ws.list_dir("big")
    assert "more entries not shown" in out
    shown = [line for line in out.splitlines() if line.startswith("file_")]
    assert 0 < len(shown) < 300
    assert f"{300 - len(shown)} more entries" in out


# ---------------------------------------------------------------------------------------------
# search_files
# ---------------------------------------------------------------------------------------------

def test_search_files_reports_file_line_text(ws):
    out = ws.search_files(r"return \d+")
    assert out == "src/app.py:4:     return 42"
    out = ws.search_files("def", glob="*.py")
    assert out.splitlines() == ["src/app.py:3: def main():", "src/util.py:1: def helper():"]
    assert ws.search_files("hello", path="README.md") == "README.md:2: hello world"
    assert ws.search_files("def", path="src", glob="util*") == "src/util.py:1: def helper():"
    assert ws.search_files("def", glob="src/u*.py") == "src/util.py:1: def helper():"


def test_search_files_no_match_and_invalid_regex(ws):
    assert ws.search_files("zzz_not_there").startswith("no matches for 'zzz_not_there'")
    with pytest.raises(ToolError, match=r"invalid regular expression '\(unclosed'"):
        ws.search_files("(unclosed")
    r = ws.execute("search_files", {"pattern": "[a-"})
    assert not r.ok and "invalid regular expression" in r.error


def test_search_files_skips_binary_symlinks_and_git_and_says_so(ws):
    (ws.root / "blob.bin").write_bytes(b"needle\x00\x00")
    os.symlink("src", ws.root / "src_link")
    (ws.root / ".git").mkdir()
    (ws.root / ".git" / "config").write_text("needle\n")
    (ws.root / "notes.txt").write_text("a needle here\n")
    out = ws.search_files("needle")
    assert out.splitlines()[0] == "notes.txt:1: a needle here"
    assert "1 binary file(s) not searched" in out
    assert "1 symlink(s) not followed" in out
    assert ".git directories not searched" in out
    assert ".git/config" not in out


def test_search_files_caps_matches(ws):
    (ws.root / "many.txt").write_text("hit\n" * 500)
    out = Workspace(ws.root, output_limit=100_000).search_files("hit")
    assert len([line for line in out.splitlines() if line.startswith("many.txt:")]) == 200
    assert "stopped after 200 matches" in out


# ---------------------------------------------------------------------------------------------
# write_file / edit_file
# ---------------------------------------------------------------------------------------------

def test_write_file_creates_parents_and_reports_bytes(ws):
    assert ws.write_file("new/deep/f.txt", "héllo\n") == "wrote 7 bytes to new/deep/f.txt"
    assert (ws.root / "new" / "deep" / "f.txt").read_text() == "héllo\n"
    assert ws.write_file("README.md", "replaced") == "wrote 8 bytes to README.md"
    assert (ws.root / "README.md").read_text() == "replaced"
    assert not [p for p in ws.root.rglob(".clutch-tmp-*")]


def test_write_file_keeps_the_file_mode(ws):
    script = ws.root / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o751)
    ws.write_file("run.sh", "#!/bin/sh\necho hi\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o751


def test_write_file_errors(ws):
    with pytest.raises(ToolError, match="is a directory"):
        ws.write_file("src", "x")
    with pytest.raises(ToolError, match="workspace root"):
        ws.write_file(".", "x")
    with pytest.raises(ToolError, match="'README.md' is not a directory"):
        ws.write_file("README.md/x.txt", "x")
    with pytest.raises(ToolError, match="lone surrogate"):
        ws.write_file("s.txt", "bad \udcff")


def test_edit_file_replaces_exactly_one_match(ws):
    out = ws.edit_file("src/app.py", "return 42", "return 43")
    assert out.startswith("edited src/app.py: replaced 1 occurrence")
    assert (ws.root / "src" / "app.py").read_text() == "import os\n\ndef main():\n    return 43\n"


def test_edit_file_zero_and_many_matches(ws):
    before = (ws.root / "src" / "app.py").read_text()
    with pytest.raises(ToolError, match="not found in src/app.py"):
        ws.edit_file("src/app.py", "return 7", "x")
    (ws.root / "dup.txt").write_text("x = 1\nx = 1\n")
    with pytest.raises(ToolError, match="matches 2 times in dup.txt"):
        ws.edit_file("dup.txt", "x = 1", "x = 2")
    (ws.root / "aaa.txt").write_text("aaa")
    with pytest.raises(ToolError, match="matches 2 times"):  # overlapping matches count
        ws.edit_file("aaa.txt", "aa", "b")
    with pytest.raises(ToolError, match="'old' is empty"):
        ws.edit_file("dup.txt", "", "y")
    with pytest.raises(ToolError, match="no such file"):
        ws.edit_file("nope.txt", "a", "b")
    assert (ws.root / "src" / "app.py").read_text() == before
    assert (ws.root / "dup.txt").read_text() == "x = 1\nx = 1\n"


def test_edit_file_refuses_binary_and_non_utf8(ws):
    (ws.root / "b.bin").write_bytes(b"ab\x00cd")
    with pytest.raises(ToolError, match="binary"):
        ws.edit_file("b.bin", "ab", "x")
    (ws.root / "l1.txt").write_bytes(b"caf\xe9 ok\n")
    with pytest.raises(ToolError, match="not valid UTF-8"):
        ws.edit_file("l1.txt", "ok", "fine")
    assert (ws.root / "l1.txt").read_bytes() == b"caf\xe9 ok\n"


def test_edit_file_crlf_hint_and_exact_bytes_kept(ws):
    (ws.root / "w.txt").write_bytes(b"a\r\nb\r\n")
    with pytest.raises(ToolError, match="CRLF"):
        ws.edit_file("w.txt", "a\nb", "x")
    ws.edit_file("w.txt", "b", "c")
    assert (ws.root / "w.txt").read_bytes() == b"a\r\nc\r\n"


# ---------------------------------------------------------------------------------------------
# execute: dispatch and argument checking
# ---------------------------------------------------------------------------------------------

def test_execute_happy_path_and_to_dict(ws):
    r = ws.execute("read_file", {"path": "README.md"})
    assert r.ok and r.output == "# Title\nhello world\n" and r.error == "" and r.exit_code is None
    r = ws.execute("write_file", {"path": "a.txt", "content": "A"})
    assert r.ok and r.output == "wrote 1 bytes to a.txt"


def test_execute_unknown_tool(ws):
    r = ws.execute("delete_everything", {})
    assert not r.ok and "unknown tool 'delete_everything'" in r.error and "run_shell" in r.error


@pytest.mark.parametrize("name, args, message", [
    ("read_file", {}, "missing required argument 'path'"),
    ("read_file", {"path": 3}, "argument 'path' must be a string, got int"),
    ("read_file", {"path": "README.md", "offset": "2"}, "argument 'offset' must be an integer, got str"),
    ("read_file", {"path": "README.md", "limit": True}, "argument 'limit' must be an integer, got bool"),
    ("read_file", {"path": "README.md", "offset": 1.5}, "argument 'offset' must be an integer, got float"),
    ("read_file", {"path": "README.md", "bogus": 1}, "unexpected argument(s) 'bogus'"),
    ("write_file", {"path": "x.txt"}, "missing required argument 'content'"),
    ("write_file", {"path": "x.txt", "content": ["a"]}, "argument 'content' must be a string, got list"),
    ("edit_file", {"path": "README.md", "old": "hello"}, "missing required argument 'new'"),
    ("search_files", {"pattern": None}, "missing required argument 'pattern'"),
    ("run_shell", {"command": "true", "timeout": "5"}, "argument 'timeout' must be a number, got str"),
    ("run_shell", {"command": "true", "timeout": -1}, "timeout must be a positive number"),
    ("list_dir", ["."], "must be a JSON object, got list"),
])
def test_execute_bad_arguments_name_the_argument(ws, name, args, message):
    r = ws.execute(name, args)
    assert not r.ok
    assert message in r.error
    assert not (ws.root / "x.txt").exists()


def test_execute_accepts_integral_floats_and_null_optionals(ws):
    (ws.root / "n.txt").write_text("a\nb\nc\n")
    r = ws.execute("read_file", {"path": "n.txt", "offset": 1.0, "limit": None})
    assert r.ok and r.output == "b\nc\n"


def test_execute_turns_tool_errors_into_results(ws):
    r = ws.execute("read_file", {"path": "missing.txt"})
    assert not r.ok and "no such file or directory: 'missing.txt'" in r.error
    r = ws.execute("edit_file", {"path": "README.md", "old": "nope", "new": "x"})
    assert not r.ok and "not found" in r.error
    r = ws.execute("read_file", {"path": "../x"})
    assert not r.ok and r.error.startswith("refused:") and "'..'" in r.error


# ---------------------------------------------------------------------------------------------
# run_shell
# ---------------------------------------------------------------------------------------------

def test_run_shell_success_combined_output_and_cwd(ws):
    r = ws.run_shell("echo out; echo err >&2; pwd", cwd="src")
    assert r.ok and r.exit_code == 0 and r.error == ""
    assert r.output == f"out\nerr\n{ws.root / 'src'}\n"


def test_run_shell_exit_code(ws):
    r = ws.run_shell("echo partial; exit 3")
    assert not r.ok and r.exit_code == 3 and r.output == "partial\n"
    assert r.error == "command exited with code 3"
    d = ws.execute("run_shell", {"command": "exit 3"}).to_dict()
    assert d["ok"] is False and d["exit_code"] == 3


def _procs_with(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker`` (and are not zombies)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_run_shell_timeout_kills_the_process_group(tmp_path, mode):
    w = Workspace(tmp_path, shell_timeout_s=10, sandbox=mode)
    marker = f"30.{os.getpid()}{time.monotonic_ns() % 10**6}"
    start = time.monotonic()
    r = w.run_shell(f"sleep {marker} & echo started; wait", timeout=0.5)
    elapsed = time.monotonic() - start
    assert not r.ok and "timed out after 0.5s" in r.error and "killed" in r.error
    assert r.exit_code is not None and r.timeout_s == 0.5
    assert "started" in r.output
    assert elapsed < 5
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _procs_with(marker):
        time.sleep(0.02)
    assert not _procs_with(marker), "the background child of the timed-out command survived"


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_run_shell_output_is_clamped_and_says_how_much(ws):
    r = ws.run_shell("seq 1 1000")  # 3893 characters, limit 1000
    assert r.ok
    assert ("[... 2893 characters cut from the middle of the output (3893 characters in all; "
            "the limit is 1000) ...]") in r.output
    assert r.output.startswith("1\n2\n3\n")
    assert r.output.endswith("999\n1000\n")
    assert len(r.output) < 1200


def test_run_shell_huge_output_is_bounded(ws):
    r = ws.run_shell("head -c 3000000 /dev/zero | tr '\\0' 'a'; echo; echo END")
    assert r.ok
    assert "bytes cut from the middle of the output (3000005 bytes in all" in r.output
    assert r.output.endswith("END\n")
    assert len(r.output) < 1200


def test_run_shell_binary_output_does_not_crash(ws):
    r = ws.run_shell("printf '\\xff\\xfe\\x00\\x80abc'; head -c 2000 /dev/urandom")
    assert r.ok and isinstance(r.output, str)
    assert "\x00" not in r.output
    json.dumps(r.to_dict())


@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_run_shell_environment_is_clean(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("GEMINI_API_KEY", "gem-secret")
    monkeypatch.setenv("GOOGLE_API_KEY", "goo-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "oai-secret")
    monkeypatch.setenv("CLUTCH_TEST_VAR", "not-passed")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    r = Workspace(tmp_path, sandbox=mode).run_shell("env")
    assert r.ok
    for secret in ("gem-secret", "goo-secret", "oai-secret", "not-passed"):
        assert secret not in r.output
    env = dict(line.split("=", 1) for line in r.output.splitlines() if "=" in line)
    assert env["PATH"] == os.environ["PATH"] and env["LC_ALL"] == "C.UTF-8"
    if mode == "bwrap":
        assert env["HOME"] == "/tmp/home" and env["TMPDIR"] == "/tmp"


def test_run_shell_stdin_is_closed_and_default_timeout_used(tmp_path):
    w = Workspace(tmp_path, shell_timeout_s=0.3)
    r = w.run_shell("cat; echo done")  # would hang on an open stdin
    assert r.ok and r.output == "done\n"
    r = w.run_shell("sleep 5")
    assert not r.ok and "timed out after 0.3s" in r.error


def test_run_shell_errors(ws):
    with pytest.raises(ToolError, match="command is empty"):
        ws.run_shell("   ")
    with pytest.raises(ToolError, match="not a directory"):
        ws.run_shell("ls", cwd="README.md")
    with pytest.raises(ToolError, match="no such file or directory"):
        ws.run_shell("ls", cwd="nowhere")


# ---------------------------------------------------------------------------------------------
# diff_preview
# ---------------------------------------------------------------------------------------------

def test_diff_preview_write_new_and_existing(ws):
    new = diff_preview(ws, "write_file", {"path": "docs/new.md", "content": "one\ntwo\n"})
    assert new.splitlines() == ["--- /dev/null", "+++ b/docs/new.md", "@@ -0,0 +1,2 @@", "+one", "+two"]
    assert not (ws.root / "docs").exists()  # a preview writes nothing
    existing = diff_preview(ws, "write_file", {"path": "README.md", "content": "# Title\nbye\n"})
    assert "--- a/README.md\n+++ b/README.md\n" in existing
    assert "-hello world\n+bye\n" in existing
    same = diff_preview(ws, "write_file", {"path": "README.md", "content": "# Title\nhello world\n"})
    assert "no changes" in same


def test_diff_preview_edit(ws):
    d = diff_preview(ws, "edit_file", {"path": "src/app.py", "old": "return 42", "new": "return 0"})
    assert "--- a/src/app.py" in d and "-    return 42\n+    return 0\n" in d
    assert (ws.root / "src" / "app.py").read_text().endswith("return 42\n")
    miss = diff_preview(ws, "edit_file", {"path": "src/app.py", "old": "nope", "new": "x"})
    assert miss.startswith("cannot preview edit_file:") and "not found" in miss
    missing = diff_preview(ws, "edit_file", {"path": "gone.py", "old": "a", "new": "b"})
    assert "no such file" in missing


def test_diff_preview_other_tools_bad_args_and_refusals(ws):
    assert diff_preview(ws, "read_file", {"path": "README.md"}) == ""
    assert diff_preview(ws, "run_shell", {"command": "rm -rf /"}) == ""
    assert "missing required argument 'content'" in diff_preview(ws, "write_file", {"path": "a"})
    refused = diff_preview(ws, "write_file", {"path": "../evil", "content": "x"})
    assert refused.startswith("cannot preview write_file: refused:")
    no_newline = diff_preview(ws, "write_file", {"path": "n.txt", "content": "x"})
    assert "\\ No newline at end of file" in no_newline


# ---------------------------------------------------------------------------------------------
# GitRepo
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def git_env(tmp_path, monkeypatch):
    """Isolate git from the machine's configuration (no identity configured)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig-global"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_AUTHOR_NAME", raising=False)
    monkeypatch.delenv("GIT_AUTHOR_EMAIL", raising=False)
    monkeypatch.delenv("GIT_COMMITTER_NAME", raising=False)
    monkeypatch.delenv("GIT_COMMITTER_EMAIL", raising=False)
    monkeypatch.delenv("EMAIL", raising=False)


def _git(root: pathlib.Path, *args: str) -> str:
    proc = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
                           "-C", str(root), *args], capture_output=True, text=True, check=True)
    return proc.stdout


@pytest.fixture
def repo_dir(tmp_path, git_env) -> pathlib.Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    for name in ("a.txt", "b.txt", "d.txt"):
        (root / name).write_text(f"{name} v1\n")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "initial")
    return root


def test_git_detect_clean_repo(repo_dir):
    repo, reason = GitRepo.detect(repo_dir)
    assert reason == "" and isinstance(repo, GitRepo)
    (repo_dir / "untracked.txt").write_text("u")  # untracked files do not make it dirty
    repo, reason = GitRepo.detect(repo_dir)
    assert repo is not None and reason == ""


def test_git_detect_not_a_repo(tmp_path, git_env):
    plain = tmp_path / "plain"
    plain.mkdir()
    repo, reason = GitRepo.detect(plain)
    assert repo is None and "not inside a git work tree" in reason


def test_git_detect_git_missing(repo_dir, monkeypatch):
    monkeypatch.setenv("PATH", str(repo_dir / "no-bin-here"))
    repo, reason = GitRepo.detect(repo_dir)
    assert repo is None and "git is not installed" in reason


def test_git_detect_dirty_names_at_most_five_files(repo_dir):
    for i in range(7):
        (repo_dir / f"f{i}.txt").write_text("x")
    _git(repo_dir, "add", ".")
    _git(repo_dir, "commit", "-q", "-m", "more")
    for i in range(7):
        (repo_dir / f"f{i}.txt").write_text("changed")
    repo, reason = GitRepo.detect(repo_dir)
    assert repo is None
    assert "uncommitted changes" in reason
    assert sum(f"f{i}.txt" in reason for i in range(7)) == 5
    assert "and 2 more" in reason


def test_git_commit_paths_commits_only_the_named_paths(repo_dir):
    repo, _ = GitRepo.detect(repo_dir)
    (repo_dir / "a.txt").write_text("a v2\n")       # modified, named
    (repo_dir / "b.txt").write_text("b v2\n")       # modified, NOT named
    (repo_dir / "new" ).mkdir()
    (repo_dir / "new" / "c.txt").write_text("c\n")  # added, named
    (repo_dir / "d.txt").unlink()                   # deleted, named
    (repo_dir / "stray.txt").write_text("s\n")     # untracked, NOT named
    sha = repo.commit_paths(["a.txt", "new/c.txt", "d.txt", "never-existed.txt"], "ticket T-1")
    assert sha and len(sha) >= 4
    assert _git(repo_dir, "rev-parse", "--short", "HEAD").strip() == sha
    changed = _git(repo_dir, "show", "--name-status", "--format=", "HEAD").split("\n")
    assert sorted(filter(None, changed)) == ["A\tnew/c.txt", "D\td.txt", "M\ta.txt"]
    assert _git(repo_dir, "log", "-1", "--format=%an <%ae>|%s").strip() == \
        "Clutch <clutch@localhost>|ticket T-1"
    status = _git(repo_dir, "status", "--porcelain")
    assert " M b.txt" in status and "?? stray.txt" in status
    assert (repo_dir / "b.txt").read_text() == "b v2\n"


def test_git_commit_paths_leaves_other_staged_changes_alone(repo_dir):
    repo = GitRepo(repo_dir)
    (repo_dir / "b.txt").write_text("b staged\n")
    _git(repo_dir, "add", "b.txt")
    (repo_dir / "a.txt").write_text("a v2\n")
    sha = repo.commit_paths(["a.txt"], "only a")
    assert _git(repo_dir, "show", "--name-only", "--format=", sha).split() == ["a.txt"]
    assert "M  b.txt" in _git(repo_dir, "status", "--porcelain")


def test_git_commit_paths_nothing_changed_returns_empty(repo_dir):
    repo = GitRepo(repo_dir)
    head = _git(repo_dir, "rev-parse", "HEAD")
    assert repo.commit_paths(["a.txt"], "noop") == ""
    assert repo.commit_paths([], "noop") == ""
    assert repo.commit_paths(["missing.txt"], "noop") == ""
    assert _git(repo_dir, "rev-parse", "HEAD") == head


def test_git_commit_paths_uses_a_configured_identity(repo_dir):
    _git(repo_dir, "config", "user.name", "Dev Person")
    _git(repo_dir, "config", "user.email", "dev@example.com")
    (repo_dir / "a.txt").write_text("a v3\n")
    GitRepo(repo_dir).commit_paths(["a.txt"], "by dev")
    assert _git(repo_dir, "log", "-1", "--format=%an <%ae>").strip() == "Dev Person <dev@example.com>"


def test_git_commit_paths_refuses_paths_outside_or_in_git(repo_dir):
    repo = GitRepo(repo_dir)
    with pytest.raises(SandboxError, match=r"'\.\.'"):
        repo.commit_paths(["../x"], "m")
    with pytest.raises(SandboxError, match=r"\.git"):
        repo.commit_paths([".git/config"], "m")
    with pytest.raises(SandboxError, match="absolute"):
        repo.commit_paths(["/etc/passwd"], "m")


def test_git_commit_paths_literal_pathspecs(repo_dir):
    repo = GitRepo(repo_dir)
    (repo_dir / "b.txt").write_text("b changed\n")
    (repo_dir / "*.txt").write_text("star\n")
    sha = repo.commit_paths(["*.txt"], "literal star")
    assert _git(repo_dir, "show", "--name-only", "--format=", sha).split() == ["*.txt"]
    assert " M b.txt" in _git(repo_dir, "status", "--porcelain")


def test_git_commit_paths_is_serialised_between_threads(repo_dir):
    repo = GitRepo(repo_dir)
    for i in range(4):
        (repo_dir / f"t{i}.txt").write_text(str(i))
    shas: list[str] = []
    errors: list[BaseException] = []

    def commit(i: int) -> None:
        try:
            shas.append(repo.commit_paths([f"t{i}.txt"], f"thread {i}"))
        except BaseException as e:  # collected and asserted on below
            errors.append(e)

    run_threads(commit, 4)
    assert errors == []
    assert len(set(shas)) == 4 and all(shas)
    assert _git(repo_dir, "status", "--porcelain") == ""


def test_git_commit_paths_on_a_repo_without_commits(tmp_path, git_env):
    root = tmp_path / "fresh"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "first.txt").write_text("1\n")
    (root / "other.txt").write_text("2\n")
    repo, reason = GitRepo.detect(root)
    assert repo is not None, reason
    sha = repo.commit_paths(["first.txt"], "first commit")
    assert _git(root, "show", "--name-only", "--format=", sha).split() == ["first.txt"]
    assert "?? other.txt" in _git(root, "status", "--porcelain")


def test_git_revert(repo_dir):
    repo = GitRepo(repo_dir)
    (repo_dir / "a.txt").write_text("a v2\n")
    sha = repo.commit_paths(["a.txt"], "change a")
    new = repo.revert(sha)
    assert new and new != sha
    assert (repo_dir / "a.txt").read_text() == "a.txt v1\n"
    assert "Revert" in _git(repo_dir, "log", "-1", "--format=%s")


def test_git_revert_conflict_is_aborted_with_a_clear_error(repo_dir):
    repo = GitRepo(repo_dir)
    (repo_dir / "a.txt").write_text("first change\n")
    first = repo.commit_paths(["a.txt"], "first")
    (repo_dir / "a.txt").write_text("second change\n")
    repo.commit_paths(["a.txt"], "second")
    head = _git(repo_dir, "rev-parse", "HEAD")
    with pytest.raises(ToolError, match=r"conflicts with later changes in a\.txt.*aborted"):
        repo.revert(first)
    assert _git(repo_dir, "rev-parse", "HEAD") == head
    assert _git(repo_dir, "status", "--porcelain") == ""
    assert (repo_dir / "a.txt").read_text() == "second change\n"
    assert not (repo_dir / ".git" / "REVERT_HEAD").exists()


def test_git_revert_rejects_non_sha(repo_dir):
    repo = GitRepo(repo_dir)
    with pytest.raises(ToolError, match="not a commit SHA"):
        repo.revert("--all")
    with pytest.raises(ToolError, match="failed"):
        repo.revert("deadbeef")


def test_module_has_no_mutable_module_state():
    mutable = (list, dict, set, bytearray)
    offenders = [name for name, value in vars(tools).items()
                 if not name.startswith("__") and isinstance(value, mutable)]
    assert offenders == []


@pytest.mark.parametrize("name", ["a.py\nDEPENDS ON: x", "tab\there", "bell\x07", "del\x7f"])
def test_control_characters_in_paths_are_refused(tmp_path, name):
    ws = Workspace(tmp_path)
    r = ws.execute("write_file", {"path": name, "content": "x"})
    assert not r.ok and "control character" in r.error
    assert list(tmp_path.iterdir()) == []
