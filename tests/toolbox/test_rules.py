"""The shell approval rules (toolbox/rules.py) and the rules' data (models.ShellRule).

Issue 15, points 2 and 9: with `ls, cat, grep, git, find, pytest, echo` allowed, the escapes a
hostile model found must ask; bash's own word splitting is the oracle for the tokeniser.
"""
from __future__ import annotations

import functools
import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from pydantic import ValidationError

from models import ApprovalPolicy, Settings, ShellRule, shell_program_guarded
from toolbox import rules
from toolbox.rules import NotParsed, RuleMatch, evaluate, split_command

ALLOWED = ["ls", "cat", "grep", "git", "find", "pytest", "echo"]
POLICY = ApprovalPolicy(shell_allowlist=ALLOWED)

# (command, a piece of the rule text the dialog shows, the offending argument)
ESCAPES = [
    ("git -c 'alias.x=!touch /abs/M' x", "git -c", "-c"),
    ("git -c core.fsmonitor='touch /abs/M' status", "git -c", "-c"),
    ("git -c core.sshCommand='touch /abs/M' ls-remote ssh://example.com/r", "git -c", "-c"),
    ("find . -exec touch /abs/M {} +", "`{`", "{"),
    ("find . -exec touch /abs/M '{}' +", "find -exec runs any program", "-exec"),
    ("find -fprint /abs/M", "find -fprint writes a file", "-fprint"),
    ("pytest --junitxml=/abs/file", "/abs/file, outside the workspace", "--junitxml=/abs/file"),
    ("pytest --basetemp=/abs/dir", "pytest --basetemp deletes that folder", "--basetemp=/abs/dir"),
    # the rest of the brief's list
    ("git --exec-path=/abs/bin status", "git --exec-path", "--exec-path=/abs/bin"),
    ("git --config-env=core.pager=EVIL log", "git --config-env", "--config-env=core.pager=EVIL"),
    ("git x", "not a known git command", "x"),
    ("git config core.pager 'touch M'", "git config", "config"),
    ("git -C /abs status", "outside the workspace", "/abs"),
    ("git -C .. status", "outside the workspace", ".."),
    ("git -C src log", "a repository made there", "src"),
    ("git diff --output=src/a.py", "--output writes a file", "--output=src/a.py"),
    ("git clone --upload=x src dst", "--upload-pack", "--upload=x"),
    ("pytest @args.txt", "pytest @file reads more options", "@args.txt"),
    ("tar -xf a.tar --to-com=sh", "tar --to-com", "--to-com=sh"),
    ("git --git-dir=evil status", "git --git-dir", "--git-dir=evil"),
    ("git grep -O'touch M' foo", "git grep -O", "-Otouch M"),
    ("git rebase -x 'touch M' HEAD~2", "git rebase -x", "-x"),
    ("git clone --upload-pack='touch M' src dst", "--upload-pack", "--upload-pack=touch M"),
    ("git clone 'ext::sh -c touch% /abs/M' dst", "ext::", "ext::sh -c touch% /abs/M"),
    ("git bisect run make", "git bisect run", "run"),
    ("git init --template=tpl", "--template", "--template=tpl"),
    ("find . -execdir rm '{}' ';'", "find -execdir", "-execdir"),
    ("find . -ok rm '{}' ';'", "find -ok", "-ok"),
    ("find . -okdir rm '{}' ';'", "find -okdir", "-okdir"),
    ("find . -delete", "find -delete", "-delete"),
    ("find . -fprint0 out", "find -fprint0", "-fprint0"),
    ("find . -fprintf out %p", "find -fprintf", "-fprintf"),
    ("find . -fls out", "find -fls", "-fls"),
    ("pytest --junit-xml ../../out.xml", "outside the workspace", "--junit-xml"),
    ("pytest --basetemp tmp", "pytest --basetemp", "--basetemp"),
    ("pytest -p evil_plugin", "pytest -p loads the plugin", "-p"),
    ("pytest -qxpevil", "pytest -p loads the plugin", "-qxpevil"),
    ("pytest --rootdir=/abs", "outside the workspace", "--rootdir=/abs"),
    ("pytest --confcutdir=../..", "outside the workspace", "--confcutdir=../.."),
    ("pytest -c /abs/pytest.ini", "pytest -c reads its configuration", "-c"),
    ("pytest -o addopts=--basetemp=/x", "pytest -o", "-o"),
    ("pytest --override-ini=cache_dir=/abs", "pytest --override-ini", "--override-ini=cache_dir=/abs"),
    ("cat /abs/secret", "/abs/secret, outside the workspace", "/abs/secret"),
    ("cat ../../etc/passwd", "outside the workspace", "../../etc/passwd"),
    ("grep -a GEMINI_API_KEY= /proc/1/environ", "/proc/1/environ", "/proc/1/environ"),
    ("grep -f/abs/patterns foo", "/abs/patterns", "-f/abs/patterns"),
    ("ls --directory=../..", "outside the workspace", "--directory=../.."),
    ("echo hi > /abs/M", "`>` redirects output", ">"),
    ("ls; touch M", "`;`", ";"),
    ("ls && touch M", "`&`", "&"),
    ("ls | sh", "`|`", "|"),
    ("echo $(touch M)", "`$`", "$"),
    ('echo "$(touch M)"', "`$` inside double quotes", "$"),
    ("echo `touch M`", "backquotes", "`"),
    ("ls ~/.ssh", "`~`", "~"),
    ("ls *", "glob", "*"),
    ("ls src/?", "glob", "?"),
    ("ls [ab]", "glob", "["),
    ("ls # comment", "comment", "#"),
    ("! ls", "`!`", "!"),
    ("ls 'unbalanced", "unbalanced single quote", "'unbalanced"),
    ('ls "unbalanced', "unbalanced double quote", '"unbalanced'),
    ("ls \\", "trailing backslash", "\\"),
    ("ls \\\ntouch M", "line break", "\n"),
    ("ls\ntouch M", "line break", "\n"),
    ("cat <<EOF", "`<`", "<"),
    ("cat .clutch/api.json", ".clutch/", ".clutch/api.json"),
    ("grep -rn token src/../.clutch", ".clutch/", "src/../.clutch"),
    ("cat --file=.git/config", ".git/", "--file=.git/config"),
    ("git clean -fdx", "git clean -x deletes ignored files", "-fdx"),
    ("pytest --pastebin=all", "pytest --pastebin", "--pastebin=all"),
    ("git maintenance start", "schedules background jobs", "maintenance"),
    ("LD_PRELOAD=evil.so ls", "NAME=value", "LD_PRELOAD=evil.so"),
    ("", "empty", ""),
    ("   \t ", "empty", ""),
]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "deep").mkdir(parents=True)
    return root


@pytest.mark.parametrize("command,rule,arg", ESCAPES, ids=[c[:40] for c, _, _ in ESCAPES])
def test_each_escape_asks_and_names_the_rule(ws, command, rule, arg):
    m = evaluate(command, POLICY, ws)
    assert isinstance(m, RuleMatch)
    assert m.decision == "ask", m
    assert rule in m.rule, m
    assert m.argument == arg, m
    assert not POLICY.shell_allowed(command)        # today's engine call (no evaluator) asks too
    assert not POLICY.shell_allowed(command, evaluate=functools.partial(evaluate, workspace_root=ws))


def _git_ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    for cmd in ["git init -q .", "git commit -q --allow-empty -m init", "echo foo > f.txt",
                "git add f.txt", "git commit -qm f", "git init -q --bare ../src.git",
                "git push -q ../src.git HEAD:refs/heads/main"]:
        subprocess.run(["bash", "-c", cmd], cwd=ws, env=env, check=True, timeout=30)
    return ws


def test_the_escapes_are_real_and_each_one_asks(tmp_path):
    """Run for real, each of these runs a program or writes a file of the command's choosing
    (a marker outside the workspace); with git and find allowed, each one asks."""
    ws = _git_ws(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (f"git -c 'alias.x=!touch {out}/alias' x", "git -c", "alias"),
        (f"git -c core.fsmonitor='touch {out}/fsmonitor; false' status", "git -c", "fsmonitor"),
        (f"find . -maxdepth 0 -exec touch {out}/exec '{{}}' +", "find -exec", "exec"),
        (f"find . -maxdepth 0 -fprint {out}/fprint", "find -fprint", "fprint"),
        (f"git grep -O'touch {out}/grep' foo", "git grep -O", "grep"),
        (f"git diff HEAD~1 --output={out}/diff", "--output writes a file", "diff"),
        (f"git clone -q --no-local --upload='touch {out}/upload; git-upload-pack' ../src.git ../dst",
         "--upload-pack", "upload"),
    ]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    for command, rule, marker in cases:
        m = evaluate(command, POLICY, ws)
        assert m.decision == "ask" and rule in m.rule, (command, m)
        subprocess.run(["bash", "-c", command], cwd=ws, env=env, capture_output=True, timeout=30)
        assert (out / marker).exists(), f"{command!r} did not do what the rule says it can"


def test_pytest_basetemp_and_junitxml_really_delete_and_write_outside(tmp_path):
    import sys
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "test_t.py").write_text("def test_t(tmp_path):\n    assert tmp_path.exists()\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("a person's file")
    report = tmp_path / "report.xml"
    command = f"pytest -q -p no:cacheprovider --basetemp={victim} --junitxml={report} test_t.py"
    m = evaluate(command, POLICY, ws)
    assert m.decision == "ask" and "pytest --basetemp deletes" in m.rule
    assert evaluate(f"pytest -q --junitxml={report} test_t.py", POLICY, ws).rule == (
        f"built-in: pytest --junitxml writes or reads {report}, outside the workspace")
    run = subprocess.run([sys.executable, "-m", *split_command(command)], cwd=ws,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not (victim / "precious.txt").exists() and report.exists()


ORDINARY = ["pytest -q tests/", "git status", "git diff HEAD~1", "ls -la src", "grep -rn foo .",
            "find . -name '*.py'", "git log --oneline -5", "git diff HEAD~1..HEAD -- src",
            "git show HEAD:src/a.py", "echo 'a | b; c > d'", 'grep -rn "def main" src',
            "pytest -q -x -p no:cacheprovider tests", "pytest -k 'not slow' tests/test_a.py",
            "cat src/../README.md", "ls src/deep/../..", "cat .gitignore", "git clean -fd", "cat src/.clutchy", "git -C . status", "git --no-pager log",
            f"cat {'{ws}'}/README.md", "grep -rn café .", "ls ''", "echo \\;"]


@pytest.mark.parametrize("command", ORDINARY)
def test_ordinary_commands_run_without_asking(ws, command):
    command = command.replace("{ws}", str(ws))
    m = evaluate(command, POLICY, ws)
    assert m.decision == "allow", m
    assert m.rule.startswith("shell_allowlist entry"), m


def test_an_unlisted_program_asks_and_says_no_rule_allows_it(ws):
    m = evaluate("rm -rf src", POLICY, ws)
    assert (m.decision, m.rule, m.argument) == ("ask", "no rule allows 'rm'", "rm")
    assert evaluate("lsx", POLICY, ws).decision == "ask"


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\u2028",
                                  "\u2029", "\xa0", "\u3000", "\u200b", "\u202e", "\x85", "\r",
                                  "\x00", "\x7f"])
def test_characters_python_calls_space_but_bash_does_not_ask(ws, char):
    command = f"ls{char}touch X"
    m = evaluate(command, POLICY, ws)
    assert m.decision == "ask", m
    assert m.argument == char and f"U+{ord(char):04X}" in m.rule, m
    assert not POLICY.shell_allowed(command)


def test_bash_itself_keeps_those_characters_inside_the_word(tmp_path):
    # the reason the rules refuse them: `ls\x0btouch X` is the program "ls\x0btouch", not `ls`
    for char in ["\x0b", "\x1c", "\x1f", "\xa0", "\u2028"]:
        words = _bash_words(f"ls{char}touch X", tmp_path)
        assert words == [f"ls{char}touch", "X"], (char, words)


def _bash_words(command: str, cwd: Path) -> list[str]:
    out = subprocess.run(["bash", "-c", "printf '%s\\0' " + command], cwd=cwd,
                         capture_output=True, timeout=10, env={"PATH": os.environ["PATH"]})
    assert out.returncode == 0, out
    return out.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1]


WORD_ALPHABET = st.sampled_from(list("ab-./=:,@%^+_") + [" ", " ", "\t", "'", '"', "\\", "~", "#",
                                                         "é", "x y", "''", '""', "\\'"])


@hsettings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(WORD_ALPHABET, min_size=1, max_size=14))
def test_the_tokeniser_reads_words_exactly_as_bash_does(tmp_path, parts):
    command = "".join(parts)
    try:
        words = split_command(command)
    except NotParsed:
        return
    # prefixing printf: bash passes printf exactly the words it would pass to the program
    assert _bash_words(command, tmp_path) == words, command


@hsettings(max_examples=400, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_gives_a_rule_match_and_never_raises(text):
    m = evaluate(text, POLICY, "/nonexistent/ws")
    assert isinstance(m, RuleMatch) and m.decision in ("allow", "ask", "deny") and m.rule


META = list(";&|`$()<>{}*?[]!\n")


@hsettings(max_examples=400, deadline=None)
@given(before=st.text(alphabet=st.characters(blacklist_characters="'\"\\"), max_size=40),
       meta=st.sampled_from(META),
       after=st.text(alphabet=st.characters(blacklist_characters="'\"\\"), max_size=40))
def test_an_unquoted_metacharacter_is_never_allowed(before, meta, after):
    for head in ("ls ", "git status ", "echo "):
        m = evaluate(head + before + meta + after, POLICY, "/tmp/ws")
        assert m.decision != "allow", (head + before + meta + after, m)


def test_evaluating_is_fast_and_starts_no_process(ws, monkeypatch):
    def no_process(*a, **k):
        raise AssertionError("the rules started a process")
    monkeypatch.setattr(subprocess, "Popen", no_process)
    commands = [c for c, _, _ in ESCAPES] + ORDINARY
    t0 = time.perf_counter()
    n = 0
    while n < 3000:
        for c in commands:
            evaluate(c, POLICY, ws)
            n += 1
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 0.001, f"{per_call * 1e6:.0f} µs per command"


def test_no_glob_and_no_command_is_slow(ws):
    p = ApprovalPolicy(rules=[{"program": "grep", "args_forbid": ["*a*a*a*a*a*a*a*a*a*a*a*a*b"],
                               "args_any": ["*[a]*?*a*?*a*?*a*b"], "decision": "deny"}])
    long_arg = "a" * 60_000
    t0 = time.perf_counter()
    assert evaluate(f"grep {long_arg} src", p, ws).decision == "ask"      # no rule applies
    m = evaluate("ls " + "x" * (rules.MAX_COMMAND_CHARS + 1), POLICY, ws)
    assert m.decision == "ask" and "more than the" in m.rule
    assert time.perf_counter() - t0 < 0.5


# ---------------------------------------------------------------------------------------------
# User rules
# ---------------------------------------------------------------------------------------------

def test_an_allow_rule_with_leading_args_allows_only_those(ws):
    p = ApprovalPolicy(rules=[{"program": "make", "args": ["test"], "decision": "allow"}])
    m = evaluate("make test", p, ws)
    assert m.decision == "allow" and m.rule == 'rule 1 in config.toml: program = "make", args = ["test"], decision = "allow"'
    assert evaluate("make deploy", p, ws).decision == "ask"
    assert evaluate("make", p, ws).decision == "ask"
    assert evaluate("make --eval='x:' test", p, ws).decision == "ask"     # built-in still applies


def test_args_allow_requires_every_argument_to_match(ws):
    p = ApprovalPolicy(rules=[ShellRule(program="pytest", args_allow=["-q", "-x", "tests/*"],
                                        decision="allow")])
    assert evaluate("pytest -q tests/test_a.py", p, ws).decision == "allow"
    assert evaluate("pytest", p, ws).decision == "allow"
    m = evaluate("pytest -k slow tests", p, ws)
    assert m.decision == "ask" and "no rule allows" in m.rule


def test_an_ask_rule_beats_an_allow_and_is_named(ws):
    p = ApprovalPolicy(shell_allowlist=["git"],
                       rules=[{"program": "git", "args": ["push"], "decision": "ask",
                               "reason": "pushing is public"}])
    m = evaluate("git push origin main", p, ws)
    assert m.decision == "ask" and m.rule.startswith("rule 1 in config.toml") and "pushing is public" in m.rule
    assert m.argument == "git"
    assert evaluate("git status", p, ws).decision == "allow"


def test_a_deny_rule_beats_everything_and_args_forbid_narrows_it(ws):
    p = ApprovalPolicy(shell_allowlist=["git", "python3"], rules=[
        {"program": "git", "args": ["push"], "args_forbid": ["--dry-run"], "decision": "deny"},
        {"program": "python3", "decision": "deny", "reason": "use the venv's python"},
        {"program": "git", "args": ["push"], "decision": "allow"},
    ])
    m = evaluate("git push origin main", p, ws)
    assert m.decision == "deny" and m.rule.startswith("rule 1 in config.toml"), m
    assert evaluate("git push --dry-run origin", p, ws).decision == "allow"
    m = evaluate("python3 -c 'print(1)'", p, ws)          # deny beats the built-in ask
    assert m.decision == "deny" and "use the venv's python" in m.rule
    assert not p.shell_allowed("git push origin main")
    assert not p.shell_allowed("git push origin main", evaluate=functools.partial(evaluate, workspace_root=ws))


def test_args_any_needs_one_matching_argument_anywhere(ws):
    p = ApprovalPolicy(shell_allowlist=["git"], rules=[
        {"program": "git", "args": ["push"], "args_any": ["--force*", "-f"], "decision": "deny"}])
    assert evaluate("git push origin main --force-with-lease", p, ws).decision == "deny"
    assert evaluate("git push -f", p, ws).decision == "deny"
    assert evaluate("git push origin main", p, ws).decision == "allow"
    assert evaluate("git status --force", p, ws).decision == "allow"   # not a push


def test_the_readme_example_does_what_the_readme_says(ws):
    import re
    import tomllib
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Approval rules", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    p = Settings.model_validate(tomllib.loads(block)).approvals
    m = evaluate("git push origin main", p, ws)
    assert m.decision == "ask" and "pushing is public" in m.rule
    assert evaluate("git reset --hard HEAD~1", p, ws).decision == "deny"
    assert evaluate("git push --force origin", p, ws).decision == "deny"
    assert evaluate("git push --force --dry-run origin", p, ws).decision == "ask"
    assert evaluate("make test lint", p, ws).decision == "allow"
    assert evaluate("make deploy", p, ws).decision == "ask"
    assert evaluate("git status", p, ws).decision == "allow"


def test_a_built_in_rule_beats_a_user_allow(ws):
    p = ApprovalPolicy(rules=[{"program": "find", "decision": "allow"}])
    assert evaluate("find . -name x", p, ws).decision == "allow"
    m = evaluate("find . -delete", p, ws)
    assert m.decision == "ask" and m.rule == "built-in: find -delete deletes what it finds"


def test_shell_auto_allows_all_but_a_deny_rule(ws):
    p = ApprovalPolicy(shell="auto")
    assert evaluate("git -c a=b x; rm -rf /", p, ws).decision == "allow"
    assert p.shell_allowed("anything at all; really")
    p = ApprovalPolicy(shell="auto", rules=[{"program": "rm", "decision": "deny"}])
    assert evaluate("rm -rf src", p, ws).decision == "deny"
    assert evaluate("ls; rm -rf src", p, ws).decision == "ask"    # cannot tell: it asks
    assert evaluate("git -c a=b x", p, ws).decision == "allow"
    assert not p.shell_allowed("rm -rf src")


def test_paths_resolve_from_the_command_directory(ws):
    assert evaluate("cat ../README.md", POLICY, ws, cwd="src").decision == "allow"
    m = evaluate("git status", POLICY, ws, cwd="src")
    assert m.decision == "ask" and "not at the workspace root" in m.rule
    m = evaluate("cat ../README.md", POLICY, ws)
    assert m.decision == "ask" and str(ws.parent / "README.md") in m.rule


def test_a_workspace_reached_through_a_symlink_counts_as_inside(tmp_path, ws):
    link = tmp_path / "link"
    link.symlink_to(ws)
    assert evaluate(f"cat {ws}/src/a.py", POLICY, link).decision == "allow"
    assert evaluate(f"cat {link}/src/a.py", POLICY, link).decision == "allow"
    assert evaluate(f"cat {tmp_path}/other", POLICY, link).decision == "ask"


@pytest.mark.parametrize("command,why", [
    ("python3 -c 'import os'", "python3 -c"), ("python -Ic x", "python -c"),
    ("python3.11 -c x", "python3.11 -c"),
    ("python3 --check-hash-based-pycs always -c x", "python3 -c"), ("python3 -X dev -c x", "python3 -c"), ("python3 -m pip install evil", "pip"),
    ("python3 -m pytest --basetemp=x", "pytest --basetemp"), ("sh -c 'touch M'", "sh -c"),
    ("bash -ec 'touch M'", "bash -c"), ("bash -o posix -c x", "bash -c"),
    ("node -e 'x'", "node -e"), ("node --eval=x", "node --eval"), ("perl -ne 'x' f", "perl -ne"),
    ("ruby -e x", "ruby -e"), ("awk 'BEGIN{}'", "awk program"), ("sed -n 1p f", "sed script"),
    ("xargs rm", "xargs runs another program"), ("env FOO=1 ls", "env runs another program"),
    ("timeout 5 rm x", "timeout runs"), ("nohup sleep 60", "nohup runs"), ("exec ls", "shell keyword"),
    ("vim -c '!touch M'", "vim can run"), ("tar -xf a.tar --to-command=sh", "tar --to-command"),
    ("tar -I 'sh -c x' -xf a.tar", "tar -I"), ("tar xIf 'sh -c x' a.tar", "tar xIf"),
    ("zip -TTsh a.zip f", "zip -TT"), ("rsync --rsh=sh a b", "rsync --rsh"), ("rsync -e 'sh -c x' a b", "rsync -e"),
    ("pip install evil", "pip installs"),
])
def test_interpreters_and_runners_ask_even_when_allowed(ws, command, why):
    prog = split_command(command)[0]
    p = ApprovalPolicy(shell_allowlist=[prog])
    m = evaluate(command, p, ws)
    assert m.decision == "ask" and why in m.rule, m
    assert not p.shell_allowed(command)


def test_scripts_and_modules_run_like_any_allowed_program(ws):
    p = ApprovalPolicy(shell_allowlist=["python3", "bash", "sed", "node"])
    for command in ["python3 src/tool.py --flag", "python3 -m pytest -q tests", "bash scripts/build.sh",
                    "sed --sandbox -n 1p f", "node src/index.js", "python3 -W error src/x.py"]:
        assert evaluate(command, p, ws).decision == "allow", command


# ---------------------------------------------------------------------------------------------
# The rules' data: validation, the allowlist shorthand, the fallback without an evaluator
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule,message", [
    ({"program": "git", "decision": "maybe"}, "rule 2 (program = 'git'): decision: Input should be 'allow', 'ask' or 'deny'"),
    ({"program": "rm -rf", "decision": "deny"}, "rule 2 (program = 'rm -rf'): program: Value error, program 'rm -rf' must be one plain command name"),
    ({"decision": "allow"}, "rule 2: program: Field required"),
    ({"program": "git"}, "rule 2 (program = 'git'): decision: Field required"),
    ({"program": "git", "decision": "allow", "arg": ["x"]}, "rule 2 (program = 'git'): arg: Extra inputs are not permitted"),
    ({"program": "git", "decision": "allow", "args": "push"}, "args must be a list of globs"),
    ({"program": "git", "decision": "allow", "args_forbid": [""]}, "args_forbid[0]: an empty pattern"),
    ({"program": "git", "decision": "allow", "args_allow": ["x" * 201]}, "at most 200"),
    ({"program": "git", "decision": "allow", "args": [3]}, "args[0]: 3 must be a text glob"),
    ({"program": "git", "decision": "allow", "args": ["a\x1bb"]}, "U+001B"),
    ("git", "rule 2: must be a table"),
])
def test_a_bad_rule_is_refused_with_its_number_and_program(rule, message):
    with pytest.raises(ValidationError) as e:
        ApprovalPolicy(rules=[{"program": "ls", "decision": "allow"}, rule])
    assert message in str(e.value), str(e.value)


def test_a_bad_rule_in_config_toml_is_named_when_the_settings_load(tmp_path):
    from conductor_store import ConductorStore
    ws = tmp_path / "ws"
    (ws / ".clutch").mkdir(parents=True)
    (ws / ".clutch" / "config.toml").write_text(
        '[approvals]\nshell_allowlist = ["ls"]\n\n'
        '[[approvals.rules]]\nprogram = "git"\nargs = ["status"]\ndecision = "allow"\n\n'
        '[[approvals.rules]]\nprogram = "npm"\ndecision = "alow"\n')
    settings, notices = ConductorStore(ws).load_settings()
    assert settings.approvals.rules == []                      # defaults in use, nothing half-read
    assert len(notices) == 1 and "rule 2 (program = 'npm'): decision" in notices[0], notices
    assert list((ws / ".clutch").glob("config.toml*"))         # the file was set aside, not lost


def test_rules_load_from_toml_and_survive_a_save(tmp_path):
    from conductor_store import ConductorStore
    ws = tmp_path / "ws"
    (ws / ".clutch").mkdir(parents=True)
    (ws / ".clutch" / "config.toml").write_text(
        '[approvals]\nshell_allowlist = ["ls", "pytest"]\n\n'
        '[[approvals.rules]]\nprogram = "git"\nargs = ["push"]\nargs_forbid = ["--force*"]\n'
        'decision = "ask"\nreason = "pushing is public"\n')
    store = ConductorStore(ws)
    settings, notices = store.load_settings()
    assert notices == []
    assert settings.approvals.rules == [ShellRule(program="git", args=["push"], args_forbid=["--force*"],
                                                  decision="ask", reason="pushing is public")]
    store.save_settings(settings)
    again, notices = store.load_settings()
    assert notices == [] and again.approvals == settings.approvals


def test_the_old_allowlist_still_loads_and_shell_allowed_is_a_bool(ws):
    p = Settings.model_validate({"approvals": {"shell_allowlist": ["ls", " pytest "]}}).approvals
    assert p.shell_allowlist == ["ls", "pytest"]
    assert p.shell_allowed("ls -la src") is True
    assert p.shell_allowed("rm x") is False
    bound = functools.partial(evaluate, workspace_root=ws)
    assert p.shell_allowed("pytest -q tests/", evaluate=bound) is True
    assert p.shell_allowed("pytest -q tests/") is False       # guarded: needs the evaluator


def test_every_program_the_built_ins_know_is_guarded_in_models():
    # models.shell_allowed (no evaluator) must never let through a program these rules look into
    samples = {"python", "python3", "python3.12", "pypy3", "pip", "pip3.11", "node22", "perl5.36",
               "/usr/bin/git", "./find"}
    missing = sorted(n for n in rules.BUILT_IN_PROGRAMS | samples if not shell_program_guarded(n))
    assert missing == []
    where = rules._where("/w", None)
    for name in rules.BUILT_IN_PROGRAMS | samples:
        base = name.rsplit("/", 1)[-1]
        risky = {"git": "-c", "find": "-exec", "pytest": "--basetemp=x", "py.test": "--basetemp=x",
                 "make": "--eval=x", "gmake": "--eval=x", "tar": "-I", "rsync": "-e", "zip": "-TT",
                 "php": "-r"}
        arg = risky.get(base, "-c" if base in rules._SHELLS or base.startswith(("python", "pypy")) else "-e")
        assert rules._by_program([name, arg, "x"], where), name     # each one has a rule that asks


PLAIN = st.lists(st.sampled_from(["ls", "cat", "git", "echo", "rm", "make", "python3", "-la", "-c",
                                  "src", "src/a.py", "..", "../x", "/etc", "a=/x", "-o/x", "x:/y",
                                  "--out=../z", "status", "x", "FOO=1", "-exec", "HEAD~1", ".clutch/api.json",
                                  "src/../.git", "a=.clutch"]),
                 min_size=1, max_size=5)


@hsettings(max_examples=300, deadline=None)
@given(words=PLAIN, allow=st.lists(st.sampled_from(["ls", "cat", "git", "echo", "rm", "make",
                                                    "python3"]), max_size=4))
def test_without_the_evaluator_shell_allowed_is_never_looser(words, allow):
    ws = "/tmp/clutch-rules-ws"
    command = " ".join(words)
    for p in (ApprovalPolicy(shell_allowlist=allow),
              ApprovalPolicy(shell_allowlist=allow, rules=[{"program": "rm", "decision": "deny"}]),
              ApprovalPolicy(shell="auto", rules=[{"program": "rm", "decision": "deny"}])):
        if p.shell_allowed(command):
            assert evaluate(command, p, ws).decision == "allow", (command, p)
