"""Shell approval rules: may this command run without asking, must it ask, or is it refused?

`evaluate(command, policy, workspace_root)` reads a command the way bash would, then judges it
by the user's rules (`[[approvals.rules]]` and `shell_allowlist` in .clutch/config.toml, see
models.ShellRule) and by built-in rules that apply whatever the user wrote (git -c, find -exec,
pytest --basetemp, python -c, paths outside the workspace, ...). The answer is data, a
`RuleMatch`: the decision, the rule in words for the approval dialog, and the argument that
decided it.

Precedence, the strictest wins (as in Codex's exec rules): a user `deny` rule > anything that
asks (a command we cannot read, a built-in rule, a user `ask` rule) > a user `allow` rule. With
no rule for the program, the command asks. Built-in rules only ever ask: a user rule can make
them stricter (deny), never looser.

Threads: pure functions, called from any thread (the engine calls it on a worker's executor
thread before run_shell). State: none; the tables below are immutable (tuples, frozensets,
mapping proxies). No subprocess; the only file-system access is resolving the workspace root.
This layer judges the command line; what a program does with files it reads (a pytest.ini, a
Makefile) is the command sandbox's business.
"""
from __future__ import annotations

import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from types import MappingProxyType
from typing import Literal

from models import SHELL_DECISIONS, ApprovalPolicy, ShellRule

log = logging.getLogger(__name__)

Decision = Literal["allow", "ask", "deny"]
MAX_COMMAND_CHARS = 65_536


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """What the rules say about one command. `rule` is shown in the approval dialog."""
    decision: Decision
    rule: str
    argument: str = ""

    def __str__(self) -> str:
        arg = f" (argument {self.argument!r})" if self.argument else ""
        return f"{self.decision}: {self.rule}{arg}"


class NotParsed(ValueError):
    """The command is not one plain simple command; `argument` is the offending text."""

    def __init__(self, reason: str, argument: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.argument = argument


# ---------------------------------------------------------------------------------------------
# Reading a command as bash does
# ---------------------------------------------------------------------------------------------

_WORD_BREAK = " \t"          # bash's blanks; a newline separates commands (refused below)
_UNQUOTED_META = MappingProxyType({
    ";": "`;` ends one command and starts another",
    "&": "`&` runs a command in the background or chains one (&&)",
    "|": "`|` pipes into another command",
    "`": "backquotes run a command",
    "$": "`$` expands a variable or runs a command",
    "(": "`(` starts a subshell", ")": "`)` ends a subshell",
    "<": "`<` redirects input", ">": "`>` redirects output (writes a file)",
    "{": "`{` is brace expansion or a group", "}": "`}` is brace expansion or a group",
    "*": "`*` is a glob the shell expands", "?": "`?` is a glob the shell expands",
    "[": "`[` is a glob the shell expands", "]": "`]` is a glob the shell expands",
    "!": "`!` negates a pipeline or expands history",
})
_DQUOTE_META = MappingProxyType({
    "$": "`$` inside double quotes still expands",
    "`": "backquotes inside double quotes still run a command",
    "!": "`!` inside double quotes may expand history"})


def _char_problem(c: str) -> str | None:
    o = ord(c)
    if c == "\n":
        return "a line break: bash runs each line as its own command"
    if c == "\t":
        return None
    if o < 32 or o == 127:
        return f"the control character U+{o:04X}"
    if o < 128:
        return None
    cat = unicodedata.category(c)
    if c.isspace() or cat[0] in "ZC":
        return (f"the invisible or non-ASCII space character U+{o:04X} ({cat}): bash does not "
                f"split words on it, so the command is not what it looks like")
    return None


def split_command(command: str) -> list[str]:
    """The words bash would pass to the program, or NotParsed when the text is anything but
    one simple command of literal words (any expansion, operator, redirection, glob, comment,
    line break, control or invisible character, unbalanced quote)."""
    if not isinstance(command, str):
        raise NotParsed(f"the command is a {type(command).__name__}, not text")
    if len(command) > MAX_COMMAND_CHARS:
        raise NotParsed(f"the command is {len(command)} characters, more than the "
                        f"{MAX_COMMAND_CHARS} the rules read")
    for c in command:
        problem = _char_problem(c)
        if problem:
            raise NotParsed(problem, c)
    words: list[str] = []
    word: list[str] = []
    in_word = False          # a word is open (even an empty '' one)
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in _WORD_BREAK:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        at_word_start = not in_word
        prev = word[-1] if word else ""
        in_word = True
        if c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                raise NotParsed("an unbalanced single quote", command[i:i + 40])
            word.append(command[i + 1:end])
            i = end + 1
        elif c == '"':
            start = i
            i += 1
            while True:
                if i >= n:
                    raise NotParsed("an unbalanced double quote", command[start:start + 40])
                d = command[i]
                if d == '"':
                    i += 1
                    break
                if d in _DQUOTE_META:
                    raise NotParsed(_DQUOTE_META[d], d)
                if d == "\\" and i + 1 < n and command[i + 1] in '"\\$`':
                    word.append(command[i + 1])
                    i += 2
                    continue
                word.append(d)
                i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise NotParsed("a trailing backslash (a line continuation)", "\\")
            word.append(command[i + 1])
            i += 2
        elif c in _UNQUOTED_META:
            raise NotParsed(_UNQUOTED_META[c], c)
        elif c == "#" and at_word_start:
            raise NotParsed("`#` starts a comment: the rest of the line is not run", "#")
        elif c == "~" and (at_word_start or prev in "=:"):
            raise NotParsed("`~` expands to a home directory", "~")
        else:
            word.append(c)
            i += 1
    if in_word:
        words.append("".join(word))
    if not words:
        raise NotParsed("the command is empty")
    return words


# ---------------------------------------------------------------------------------------------
# Built-in rules: each returns (rule in words, offending argument) or None
# ---------------------------------------------------------------------------------------------

Finding = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Where:
    """The directories a path may resolve into, and the one relative paths start from."""
    roots: tuple[str, ...]
    cwd: str

    def resolve(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.cwd, path))

    def inside(self, path: str) -> bool:
        p = self.resolve(path)
        return any(p == r or p.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)


def _is_pathish(piece: str) -> bool:
    return piece.startswith("/") or ".." in piece.split("/")


def _path_pieces(word: str) -> list[str]:
    """The parts of one word that may name a path: the word, each part after = : , @, and
    for a short option (-o/abs, -I../x) the value glued to it."""
    pieces = [word, *re.split(r"[=:,@]", word)[1:]]
    if word.startswith("-") and not word.startswith("--") and len(word) > 2:
        pieces.append(word[2:])
        m = re.match(r"-[A-Za-z0-9]*", word)
        if m:
            pieces.append(word[m.end():])
    return pieces


_PRIVATE_DIRS = frozenset({".clutch", ".git"})


def _path_finding(word: str, where: _Where) -> str | None:
    """Why a path in `word` asks (outside the workspace, or in .clutch/ or .git/), else None."""
    for piece in _path_pieces(word):
        if not piece:
            continue
        if _is_pathish(piece) and not where.inside(piece):
            return f"the argument names {where.resolve(piece)}, outside the workspace"
        resolved = where.resolve(piece)
        for root in where.roots:
            if resolved.startswith(root.rstrip(os.sep) + os.sep):
                top = resolved[len(root.rstrip(os.sep)) + 1:].split(os.sep, 1)[0]
                if top in _PRIVATE_DIRS:
                    return (f"the argument names {top}/ (Clutch's settings and API token, or "
                            f"git's own files), which the worker tools do not touch")
    return None


def _long_prefix(word: str, names: Iterable[str]) -> str | None:
    """The long option of `names` that `word` names or abbreviates (getopt_long and git's
    parse-options take any unambiguous prefix: `--upload=x` is `--upload-pack=x`), else None."""
    given = word.split("=", 1)[0]
    if not given.startswith("--") or len(given) < 3:
        return None
    return next((n for n in names if n.startswith(given)), None)


def _short_cluster(word: str) -> str:
    """`-abc` -> "abc"; anything else (a long option, a plain word, `-`) -> ""."""
    return word[1:] if word.startswith("-") and not word.startswith("--") and len(word) > 1 else ""


def _opt(word: str, names: frozenset[str]) -> str | None:
    """The long option of `names` that `word` is (`--x` or `--x=value`), else None."""
    name = word.split("=", 1)[0]
    return name if name in names else None


# --- git ---------------------------------------------------------------------------------------

_GIT_FLAGS = frozenset({
    "--no-pager", "-p", "--paginate", "-P", "--bare", "--no-replace-objects", "--literal-pathspecs",
    "--glob-pathspecs", "--noglob-pathspecs", "--icase-pathspecs", "--no-optional-locks",
    "--version", "--help", "-h", "-v", "--no-advice", "--no-lazy-fetch"})
_GIT_COMMANDS = frozenset("""
add am annotate apply archive bisect blame branch bundle cat-file check-attr check-ignore
check-mailmap check-ref-format checkout checkout-index cherry cherry-pick clean clone commit
commit-graph commit-tree count-objects describe diff diff-files diff-index diff-tree fetch
fmt-merge-msg for-each-ref format-patch fsck gc get-tar-commit-id grep
hash-object index-pack init interpret-trailers log ls-files ls-remote ls-tree mailinfo mailsplit
merge merge-base merge-file merge-tree mktag mktree multi-pack-index mv name-rev
notes pack-objects pack-refs patch-id prune prune-packed pull push range-diff read-tree rebase
reflog remote repack replace request-pull rerere reset restore rev-list rev-parse revert rm
shortlog show show-branch show-index show-ref sparse-checkout stash status stripspace switch
symbolic-ref tag unpack-objects update-index update-ref verify-commit verify-pack verify-tag
version whatchanged worktree write-tree
""".split())
_GIT_ASK_COMMANDS = MappingProxyType({
    "config": "git config can set options that run programs (core.fsmonitor, core.sshCommand, alias.*)",
    "difftool": "git difftool runs an external diff program",
    "mergetool": "git mergetool runs an external merge program",
    "filter-branch": "git filter-branch runs shell code for each commit",
    "filter-repo": "git filter-repo runs Python code given on the command line",
    "submodule": "git submodule can run any command (foreach) and fetch from anywhere",
    "send-email": "git send-email sends mail and runs its helpers",
    "daemon": "git daemon serves the repository on the network",
    "instaweb": "git instaweb starts a web server and a browser",
    "web--browse": "git web--browse starts a browser",
    "help": "git help starts a man page viewer or a web browser",
    "hook": "git hook runs the repository's hooks",
    "maintenance": "git maintenance start schedules background jobs outside the workspace",
    "for-each-repo": "git for-each-repo runs git in repositories a configuration lists",
    "credential": "git credential reads and stores credentials",
    "credential-store": "git credential-store reads and stores credentials",
    "credential-cache": "git credential-cache reads and stores credentials",
    "upload-pack": "git upload-pack is a transport helper, not for a person",
    "receive-pack": "git receive-pack is a transport helper, not for a person",
    "shell": "git shell is a login shell",
    "fast-import": "git fast-import writes objects and refs from a stream",
    "p4": "git p4 runs Perforce commands", "svn": "git svn runs Subversion commands",
    "cvsserver": "git cvsserver is a server", "cvsimport": "git cvsimport runs cvsps",
    "archimport": "git archimport runs tla", "quiltimport": "git quiltimport applies patch series",
})
_GIT_RISKY_LONG = MappingProxyType({
    "--upload-pack": "names the program git runs for the transfer",
    "--receive-pack": "names the program git runs for the transfer",
    "--exec": "names a program git runs",
    "--template": "copies hooks (programs git later runs) from a directory",
    "--separate-git-dir": "puts the repository somewhere else",
    "--ext-diff": "runs an external diff program",
    "--open-files-in-pager": "opens the matches in a program",
    "--config": "sets any configuration (which can run programs) in the new repository",
    "--remote": "runs git on another machine",
    "--output": "writes a file (the write tools' approval would not see it)",
})
_GIT_RISKY_SHORT = MappingProxyType({   # subcommand -> short options in a cluster that ask
    "clone": MappingProxyType({"c": "git clone -c sets any configuration (which can run programs)",
                               "u": "git clone -u names the program run for the transfer"}),
    "rebase": MappingProxyType({"x": "git rebase -x runs a shell command after each commit"}),
    "grep": MappingProxyType({"O": "git grep -O opens the matches in any program"}),
    "clean": MappingProxyType({"x": "git clean -x deletes ignored files too (.clutch/, build output)",
                               "X": "git clean -X deletes ignored files (.clutch/, build output)"}),
})


def _git(argv: list[str], where: _Where) -> Finding | None:
    if where.cwd not in where.roots:
        return (f"built-in: git runs in {where.cwd}, not at the workspace root: a repository made "
                f"there could hold a configuration that runs programs", argv[0])
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "-c" or a.startswith("-c"):
            return ("built-in: git -c sets any configuration for this command (core.fsmonitor, "
                    "core.sshCommand, alias.* run programs)", a)
        if a.split("=", 1)[0] == "--config-env":
            return "built-in: git --config-env sets any configuration from the environment", a
        if a.split("=", 1)[0] == "--exec-path":
            return "built-in: git --exec-path chooses where git finds the programs it runs", a
        if a.split("=", 1)[0] in ("--git-dir", "--work-tree", "--namespace", "--super-prefix"):
            return (f"built-in: git {a.split('=', 1)[0]} points git at another repository, whose "
                    f"configuration can run programs", a)
        if a == "-C":
            if i + 1 >= len(argv):
                return "built-in: git -C needs a directory", a
            target = argv[i + 1]
            if not where.inside(target):
                return (f"built-in: git -C runs git in {where.resolve(target)}, outside the "
                        f"workspace", target)
            if where.resolve(target) != where.cwd:
                return (f"built-in: git -C runs git in {target}: a repository made there could "
                        f"hold a configuration that runs programs", target)
            i += 2
            continue
        if a in _GIT_FLAGS:
            i += 1
            continue
        if a.startswith("-"):
            return f"built-in: git option {a!r} before the subcommand is not one the rules know", a
        break
    if i >= len(argv):
        return None
    sub, rest = argv[i], argv[i + 1:]
    if sub in _GIT_ASK_COMMANDS:
        return f"built-in: {_GIT_ASK_COMMANDS[sub]}", sub
    if sub not in _GIT_COMMANDS:
        return (f"built-in: git {sub!r} is not a known git command; an alias (alias.* in a "
                f"configuration) can run any program", sub)
    if sub == "bisect" and "run" in rest:
        return "built-in: git bisect run runs a command for each step", "run"
    for a in rest:
        if a == "--":
            break
        name = _long_prefix(a, _GIT_RISKY_LONG)      # git takes any unambiguous prefix
        if name:
            return f"built-in: git {sub} {name} {_GIT_RISKY_LONG[name]}", a
        cluster = _short_cluster(a)
        for letter, why in _GIT_RISKY_SHORT.get(sub, MappingProxyType({})).items():
            if letter in cluster:
                return f"built-in: {why}", a
        if "::" in a.split("/", 1)[0]:
            return ("built-in: a `transport::address` remote runs a remote helper program "
                    "(ext:: runs any command)", a)
    return None


# --- find --------------------------------------------------------------------------------------

_FIND_ASK = MappingProxyType({
    "-exec": "find -exec runs any program", "-execdir": "find -execdir runs any program",
    "-ok": "find -ok runs any program", "-okdir": "find -okdir runs any program",
    "-delete": "find -delete deletes what it finds",
    "-fprint": "find -fprint writes a file", "-fprint0": "find -fprint0 writes a file",
    "-fprintf": "find -fprintf writes a file", "-fls": "find -fls writes a file",
})


def _find(argv: list[str], where: _Where) -> Finding | None:
    for a in argv[1:]:
        if a in _FIND_ASK:
            return f"built-in: {_FIND_ASK[a]}", a
    return None


# --- pytest ------------------------------------------------------------------------------------

_PYTEST_PATH_OPTS = frozenset({
    "--junitxml", "--junit-xml", "--rootdir", "--confcutdir", "--config-file", "--result-log",
    "--resultlog", "--report-log", "--log-file", "--debug", "--cov-report", "--html",
    "--json-report-file", "--cache-dir"})
_PYTEST_VALUE_SHORT = frozenset("kmrWnC")      # short options whose value follows them
_PYTEST_FLAG_SHORT = frozenset("qvxslhVdfS")     # short options without a value


def _pytest_short(cluster: str, nxt: str, a: str, where: _Where) -> Finding | None:
    for j, ch in enumerate(cluster):
        val = cluster[j + 1:] or nxt
        if ch == "p":
            if val.startswith("no:"):
                return None                 # turning a plugin off loads nothing
            return "built-in: pytest -p loads the plugin module it names", a
        if ch == "o":
            return "built-in: pytest -o sets any ini option (addopts can add any option)", a
        if ch == "c":
            if val and where.inside(val):
                return None
            return (f"built-in: pytest -c reads its configuration from "
                    f"{where.resolve(val) if val else '(nothing)'}, outside the workspace", a)
        if ch in _PYTEST_VALUE_SHORT:
            return None                     # the rest of the cluster is this option's value
        if ch not in _PYTEST_FLAG_SHORT:
            return f"built-in: pytest option -{ch} is not one the rules know", a
    return None


def _pytest(argv: list[str], where: _Where) -> Finding | None:
    args = argv[1:]
    for i, a in enumerate(args):
        if a == "--":
            break
        nxt = args[i + 1] if i + 1 < len(args) else ""
        name = a.split("=", 1)[0]
        value = a.split("=", 1)[1] if "=" in a else nxt
        if a.startswith("@"):
            return "built-in: pytest @file reads more options from that file", a
        if name == "--basetemp":
            return ("built-in: pytest --basetemp deletes that folder before the run (even "
                    "inside the workspace)", a)
        if name == "--override-ini":
            return "built-in: pytest --override-ini sets any ini option (addopts can add any option)", a
        if name == "--pastebin":
            return "built-in: pytest --pastebin sends the test output to a web service", a
        if name == "--pdbcls":
            return "built-in: pytest --pdbcls imports and runs the class it names", a
        if name in _PYTEST_PATH_OPTS and value and not where.inside(value.split(":")[-1]):
            return (f"built-in: pytest {name} writes or reads "
                    f"{where.resolve(value.split(':')[-1])}, outside the workspace", a)
        found = _pytest_short(_short_cluster(a), nxt, a, where)
        if found:
            return found
    return None


# --- interpreters, runners, editors ---------------------------------------------------------

_PYTHON_RE = re.compile(r"(python|pypy)[0-9.]*")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh"})
_EVAL_FLAGS = MappingProxyType({      # program -> (long options, letters in a short cluster)
    "node": (frozenset({"--eval", "--print", "--require", "--import", "--loader",
                        "--experimental-loader"}), "epri"),
    "deno": (frozenset({"--eval"}), "e"), "bun": (frozenset({"--eval", "--print"}), "ep"),
    "perl": (frozenset(), "eEmM"), "ruby": (frozenset(), "er"), "php": (frozenset({"--run"}), "r"),
    "lua": (frozenset(), "el"), "luajit": (frozenset(), "el"), "Rscript": (frozenset(), "e"),
    "R": (frozenset(), "e"), "osascript": (frozenset(), "e"),
})
_RUNNERS = frozenset({
    "env", "xargs", "nice", "nohup", "setsid", "timeout", "stdbuf", "time", "watch", "sudo",
    "doas", "su", "runuser", "pkexec", "chroot", "unshare", "nsenter", "flock", "strace",
    "ltrace", "taskset", "ionice", "chrt", "script", "expect", "busybox", "parallel", "ssh",
    "gdb", "valgrind", "firejail", "bwrap", "systemd-run", "at", "batch", "crontab", "sg",
    "newgrp", "tclsh", "wish"})
_EDITORS = frozenset({"vi", "vim", "nvim", "view", "ex", "ed", "emacs", "nano", "less", "more",
                      "man"})
_SHELL_WORDS = frozenset({
    "exec", "eval", "source", ".", "command", "builtin", "enable", "trap", "alias", "hash",
    "export", "declare", "typeset", "local", "readonly", "set", "shopt", "ulimit", "fc",
    "coproc", "select", "function", "if", "then", "else", "elif", "fi", "for", "while",
    "until", "do", "done", "case", "esac", "in"})
_AWKS = frozenset({"awk", "gawk", "mawk", "nawk"})
_TAR_LONG = frozenset({"--to-command", "--use-compress-program", "--checkpoint-action",
                       "--info-script", "--new-volume-script", "--rmt-command", "--rsh-command"})


# every program `_by_program` looks into (models.SHELL_GUARDED_PROGRAMS must cover it; tested)
BUILT_IN_PROGRAMS = (frozenset({"git", "find", "pytest", "py.test", "pip", "sed", "make", "gmake",
                                "tar", "rsync", "zip", "nodejs"})
                     | _SHELLS | frozenset(_EVAL_FLAGS) | _RUNNERS | _EDITORS | _SHELL_WORDS | _AWKS)


def _python(argv: list[str], where: _Where) -> Finding | None:
    args = argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--" or not a.startswith("-") or a == "-":
            return None                 # a script: it runs like any program of the workspace
        if a == "--check-hash-based-pycs":
            i += 2                      # the one long option that takes a value
            continue
        cluster = _short_cluster(a)
        for j, ch in enumerate(cluster):
            if ch == "c":
                return f"built-in: {argv[0]} -c runs the code given on the command line", a
            if ch == "m":
                mod = cluster[j + 1:] or (args[i + 1] if i + 1 < len(args) else "")
                rest = args[i + (1 if cluster[j + 1:] else 2):]
                if mod == "pytest":
                    return _pytest(["pytest", *rest], where)
                if mod in ("pip", "ensurepip", "venv"):
                    return f"built-in: {argv[0]} -m {mod} installs packages and runs their code", a
                return None
            if ch in "WX":
                i += 0 if cluster[j + 1:] else 1
                break
        i += 1
    return None


def _by_program(argv: list[str], where: _Where) -> Finding | None:
    name = argv[0].rsplit("/", 1)[-1]
    if name == "git":
        return _git(argv, where)
    if name == "find":
        return _find(argv, where)
    if name in ("pytest", "py.test"):
        return _pytest(argv, where)
    if _PYTHON_RE.fullmatch(name):
        return _python(argv, where)
    if re.fullmatch(r"pip[0-9.]*", name):
        return f"built-in: {name} installs packages and runs their code", name
    if name in _SHELLS:
        for a in argv[1:]:   # anywhere: `bash -o posix -c ...` hides -c behind a value
            if "c" in _short_cluster(a) or a == "--command":
                return f"built-in: {name} -c runs the shell code given on the command line", a
        return None
    family = re.fullmatch(r"(node|perl|ruby|lua)[0-9.]*", name)
    key = family.group(1) if family else ("node" if name == "nodejs" else name)
    if key in _EVAL_FLAGS:
        longs, letters = _EVAL_FLAGS[key]
        for a in argv[1:]:
            if _opt(a, longs) or any(ch in letters for ch in _short_cluster(a)) \
                    or (key in ("deno", "bun") and a == "eval"):
                return f"built-in: {name} {a.split('=', 1)[0]} runs the code given on the command line", a
        return None
    if name in _AWKS:
        return f"built-in: an {name} program can run commands (system()) and write files", name
    if name == "sed":
        if "--sandbox" in argv[1:]:
            return None
        return ("built-in: a sed script can run commands (e) and write files (w); add --sandbox "
                "to turn those off", name)
    if name in ("make", "gmake"):
        for a in argv[1:]:
            if a.split("=", 1)[0] == "--eval" or "E" in _short_cluster(a):
                return f"built-in: {name} --eval runs the makefile text given on the command line", a
        return None
    if name == "tar":
        for k, a in enumerate(argv[1:]):
            # `tar xIf cmd a.tar`: a first argument without a dash is a cluster of options too
            cluster = a if k == 0 and not a.startswith("-") else _short_cluster(a)
            if _long_prefix(a, _TAR_LONG) or any(ch in "IF" for ch in cluster):
                return f"built-in: tar {a.split('=', 1)[0]} runs a program", a
        return None
    if name == "rsync":
        for a in argv[1:]:
            if _long_prefix(a, ("--rsh", "--rsync-path")) or "e" in _short_cluster(a):
                return f"built-in: rsync {a.split('=', 1)[0]} runs a program", a
        return None
    if name == "zip":
        for a in argv[1:]:
            if a.startswith("-TT") or _long_prefix(a, ("--unzip-command",)):
                return "built-in: zip -TT runs a program to test the archive", a
        return None
    if name in _RUNNERS:
        return f"built-in: {name} runs another program given in its arguments", name
    if name in _EDITORS:
        return f"built-in: {name} can run shell commands from inside it", name
    if name in _SHELL_WORDS:
        return f"built-in: {name!r} is a shell keyword or builtin that changes how commands run", name
    return None


def _builtin(argv: list[str], where: _Where) -> Finding | None:
    if re.match(r"[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
        return ("built-in: `NAME=value` before a command changes its environment "
                "(LD_PRELOAD, PYTHONPATH, GIT_* can run other programs)", argv[0])
    found = _by_program(argv, where)
    if found:
        return found
    for a in argv:
        why = _path_finding(a, where)
        if why is not None:
            return f"built-in: {why}", a
    return None


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------

def _where(workspace_root: Path | str, cwd: Path | str | None) -> _Where:
    root = os.path.abspath(os.fspath(workspace_root))
    roots = tuple(dict.fromkeys((root, os.path.realpath(root))))
    base = os.path.abspath(os.path.join(root, os.fspath(cwd))) if cwd is not None else root
    if not any(base == r or base.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
        base = root   # a cwd outside the workspace is the tools' error; paths resolve from the root
    return _Where(roots, base)


def _strictest(matches: list[tuple[str, ShellRule]]) -> tuple[str, ShellRule] | None:
    best: tuple[str, ShellRule] | None = None
    for named in matches:
        if best is None or (SHELL_DECISIONS.index(named[1].decision)
                            > SHELL_DECISIONS.index(best[1].decision)):
            best = named
    return best


def _evaluate(command: str, policy: ApprovalPolicy, workspace_root: Path | str,
              cwd: Path | str | None) -> RuleMatch:
    try:
        argv = split_command(command)
    except NotParsed as e:
        if policy.shell == "auto" and not any(r.decision == "deny" for r in policy.rules):
            return RuleMatch("allow", 'shell = "auto": every command runs without asking')
        return RuleMatch("ask", f"not a plain command: {e.reason}", e.argument)
    user = [(name, r) for name, r in policy.shell_rules() if r.applies_to(argv)]
    denied = next(((name, r) for name, r in user if r.decision == "deny"), None)
    if denied:
        return RuleMatch("deny", denied[0], argv[0])
    if policy.shell == "auto":
        return RuleMatch("allow", 'shell = "auto": every command runs without asking')
    found = _builtin(argv, _where(workspace_root, cwd))
    if found:
        return RuleMatch("ask", found[0], found[1])
    best = _strictest(user)
    if best is None:
        return RuleMatch("ask", f"no rule allows {argv[0]!r}", argv[0])
    return RuleMatch(best[1].decision, best[0], argv[0] if best[1].decision != "allow" else "")


def evaluate(command: str, policy: ApprovalPolicy, workspace_root: Path | str,
             cwd: Path | str | None = None) -> RuleMatch:
    """Judge one shell command. Never raises: an unexpected error is logged and asks.

    `cwd` is the directory the command runs in (relative to the workspace or absolute); paths
    in the command resolve from it."""
    try:
        return _evaluate(command, policy, workspace_root, cwd)
    except Exception as e:   # noqa: BLE001 - a bug here must ask, never allow or crash the worker
        log.exception("shell rules could not judge %r", command[:200] if isinstance(command, str) else command)
        return RuleMatch("ask", f"the rules could not judge this command ({type(e).__name__}: {e})")
