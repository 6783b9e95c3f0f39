"""What the offline model reads in a request's text: the ticket, its files, the paths and the
functions the text names, and where new files belong beside the code that is already there.

Threads: any (pure functions). State: none.

The offline model reads a request the way a real model reads prose: by its section markers
(prompts.py's contract: "TICKET id:", "TARGET FILES:", "FILE path:", "REPOSITORY MAP:" ...), so an
edited prompt changes what it does.
"""
from __future__ import annotations

import builtins
import hashlib
import keyword
import posixpath
import re
from dataclasses import dataclass

STOP_WORDS = frozenset("a an the and or of to for in on with its it their our your add make "
                       "create implement build write new into from by as at be is are this that "
                       "then".split())

# Extensions a path named in prose must have to count as a file (so "e.g." or "v1.2" are not).
FILE_EXTS = frozenset(
    "py pyi md rst txt toml yaml yml json cfg ini js mjs cjs ts tsx jsx go rs java kt c h cc cpp "
    "hpp cs fs fsx rb php sh bash sql html css scss lua swift scala ex exs erl hs ml clj".split())
# Never written by the offline worker: Clutch's own files, git's, the Conductor plan.
OFF_LIMITS = (".clutch", ".git", "conductor")
_SECTION_HEADS = r"(?:FILE .+?:\n|SKELETON .+?:\n|PROJECT DOCUMENT .+?:\n|TICKET \S+?:|REPOSITORY MAP:\n)"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def slug(text: str, max_words: int = 3) -> str:
    ws = [w for w in words(text) if w not in STOP_WORDS] or words(text) or ["work"]
    return "_".join(ws[:max_words])[:32].strip("_") or "work"


def digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "big")


def section(text: str, name: str) -> str:
    """The text after `NAME:` up to the next blank line or heading ('' when absent)."""
    m = re.search(rf"^{re.escape(name)}:[ \t]*(.*?)(?=^\s*$|^[A-Z][A-Z0-9 -]+(?: \([^)\n]*\))?:|\Z)",
                  text, re.M | re.S)
    return m.group(1).strip() if m else ""


def file_sections(text: str) -> dict[str, str]:
    """path -> the file's text, for every `FILE path:` section of a rendered request (the
    sections are joined by blank lines; a file's own blank lines stay in its text)."""
    out: dict[str, str] = {}
    for m in re.finditer(rf"^FILE (.+?):\n(.*?)(?=\n\n{_SECTION_HEADS}|\Z)", text, re.M | re.S):
        out.setdefault(m.group(1), m.group(2).rstrip("\n") + "\n")
    return out


@dataclass(frozen=True)
class TicketText:
    ticket_id: str
    description: str           # the whole description (sub-task lines included)
    track: str
    targets: tuple[str, ...]
    context: tuple[str, ...]

    @property
    def headline(self) -> str:
        return self.description.splitlines()[0].strip() if self.description else ""


def ticket_text(first: str) -> TicketText:
    m = re.search(r"^TICKET\s+(\S+?):[ \t]*(.*?)(?=\n[ \t]*\n[ \t]*TRACK:|\n(?:TRACK|TARGET FILES):|\Z)",
                  first, re.M | re.S)
    ticket_id = m.group(1) if m else "T-?"
    description = m.group(2).strip() if m else first.strip()[:200]
    raw = section(first, "TARGET FILES")
    targets = tuple(dict.fromkeys(t.strip() for t in raw.split(",")
                                  if t.strip() and not t.strip().startswith("(")))
    context = tuple(re.findall(r"^- (\S+)$", section(first, "CONTEXT FILES"), re.M))
    return TicketText(ticket_id, description, section(first, "TRACK"), targets, context)


def writable(path: str) -> bool:
    """A relative path inside the workspace that the offline worker may write."""
    p = path.strip()
    if not p or p.startswith(("/", "~")) or "\\" in p:
        return False
    parts = p.split("/")
    return ".." not in parts and parts[0] not in OFF_LIMITS and "" not in parts


_PATH = re.compile(r"(?<![\w/.\-])((?:[\w\-.]+/)*[\w\-]+(?:\.[\w\-]+)*\.([A-Za-z][A-Za-z0-9]{0,6}))"
                   r"(?![\w/\-]|\.[\w])")


def named_paths(text: str) -> list[str]:
    """Relative file paths the prose names (`util.py`, `docs/guide.md`), in order."""
    out: dict[str, None] = {}
    for m in _PATH.finditer(text):
        path = m.group(1)
        if path.startswith("./"):
            path = path[2:]
        if m.group(2).lower() in FILE_EXTS and writable(path) and not re.fullmatch(r"[\d.]+", path):
            out[path] = None
    return list(out)


# ---------------------------------------------------------------------------------------------
# Functions the text names
# ---------------------------------------------------------------------------------------------

_NOT_FUNCS = frozenset(dir(builtins)) | frozenset(keyword.kwlist)
_NOT_NAMES = _NOT_FUNCS | STOP_WORDS | frozenset("e g i ie eg etc see note".split())


@dataclass(frozen=True)
class FuncSpec:
    name: str
    params: tuple[str, ...] | None     # None: the text gave none (the operation's own are used)


def _params(raw: str) -> tuple[str, ...] | None:
    if not raw.strip():
        return None
    names = []
    for part in raw.split(","):
        name = part.split(":")[0].split("=")[0].strip()
        if not name.isidentifier() or keyword.iskeyword(name) or name == "self":
            return None
        names.append(name)
    return tuple(names) if len(set(names)) == len(names) else None


def named_functions(text: str, module_stems: frozenset[str] = frozenset()) -> list[FuncSpec]:
    """Functions the prose asks for: `multiply()`, `multiply(a, b)`, "a function named
    multiply", `def multiply`. A dotted call (`os.path.join()`) counts only when its qualifier
    is one of module_stems (`util.multiply()`); builtins and keywords never count."""
    found: dict[str, FuncSpec] = {}

    def keep(name: str, params: tuple[str, ...] | None, words: bool = False) -> None:
        if name.lower() in (_NOT_NAMES if words else _NOT_FUNCS) or name.startswith("__"):
            return
        prev = found.get(name)
        if prev is None or (prev.params is None and params is not None):
            found[name] = FuncSpec(name, params)

    for m in re.finditer(r"(?<![\w`])((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*)\(([^()\n]*)\)", text):
        qual = m.group(1).rstrip(".")
        if qual and qual.split(".")[-1] not in module_stems:
            continue
        keep(m.group(2), _params(m.group(3)))
    for m in re.finditer(r"\bfunctions?\s+(?:called\s+|named\s+)`?([A-Za-z_]\w*)`?"
                         r"|`([A-Za-z_]\w*)`\s+(?:function|helper)\b|\bdef\s+([A-Za-z_]\w*)",
                         text):
        keep(next(g for g in m.groups() if g), None, words=True)
    return list(found.values())


def wants_tests(text: str) -> bool:
    return bool(re.search(r"\b(?:tests?|tested|testing|pytest|unit[- ]?tests?)\b", text, re.I))


def wants_docs(text: str) -> bool:
    return bool(re.search(r"\b(?:docs?|documentation|document|readme|explain)\b", text, re.I))


def is_test_path(path: str) -> bool:
    name = posixpath.basename(path)
    return (name.startswith("test_") or name.endswith(("_test.py", ".test.ts", ".test.js",
                                                       "_test.go"))
            or path.startswith(("tests/", "test/")) and name.endswith(".py")
            and name != "__init__.py" and name != "conftest.py")


def is_code_path(path: str) -> bool:
    return path.endswith(".py") and not is_test_path(path)


def module_name(path: str) -> str:
    """The import name of a Python file: util.py -> util, src/pkg/mod.py -> pkg.mod."""
    stem = path[:-3] if path.endswith(".py") else path
    if stem.endswith("/__init__"):
        stem = stem[:-9]
    for root in ("src/", "lib/"):
        if stem.startswith(root):
            stem = stem[len(root):]
            break
    return stem.replace("/", ".")


def test_path_for(code: str, existing: list[str]) -> str:
    """Where a test of `code` belongs: an existing test file that imports it or is named for it,
    else tests/test_<stem>.py when the repository keeps its tests in tests/ (or test/), else
    test_<stem>.py beside the code."""
    stem = posixpath.basename(code)[:-3] if code.endswith(".py") else posixpath.basename(code)
    wanted = f"test_{stem}.py"
    named = [p for p in existing if posixpath.basename(p) == wanted]
    if named:
        return sorted(named, key=lambda p: (p.count("/"), p))[0]
    for folder in ("tests/", "test/"):
        if any(p.startswith(folder) for p in existing):
            return folder + wanted
    d = posixpath.dirname(code)
    return posixpath.join(d, wanted) if d else wanted


def beside_related(existing: list[str], name: str, text: str = "") -> str:
    """A new module `name`.py placed beside the most related existing code: the code file
    whose path shares most words with the task's text (the map's order breaks ties), or at
    the top level when there is none."""
    code = [p for p in existing if is_code_path(p) and posixpath.basename(p) != "__init__.py"]
    if not code:
        return f"{name}.py"
    told = set(words(text)) - STOP_WORDS

    def score(p: str) -> int:
        ws = set(words(p[:-3])) - {"py"}
        return len(ws & told) + len({w.rstrip("s") for w in ws} & {w.rstrip("s") for w in told})

    best = max(range(len(code)), key=lambda i: (score(code[i]), -i))
    d = posixpath.dirname(code[best])
    return posixpath.join(d, f"{name}.py") if d else f"{name}.py"


def notes_path(ticket_id: str, description: str, has_docs_dir: bool) -> str:
    """The file a ticket with no target files writes what it did to."""
    tid = re.sub(r"[^a-z0-9]+", "-", ticket_id.lower()).strip("-") or "ticket"
    name = f"{tid}-{slug(description, 4).replace('_', '-')}.md"
    return f"docs/{name}" if has_docs_dir else f"notes/{name}"
