"""The offline model's Tier 3 worker: it looks, reads what it will change, changes it (an
existing file by `edit_file` replacements that keep every line, a new file by `write_file`),
reviews its new files, checks its work with one shell command, and sums up.

Every turn is worked out again from the request alone (the ticket text, the `FILE` sections and
the tool results in the history), so the same request always gets the same answer. A ticket
with no target files still changes one file: a path its text names, or a notes page.

Threads: the executor thread of the agent that calls the provider. State: none (each call
builds its plan from the request and drops it).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from providers.base import Message, ToolCall
from providers.offline_code import (Function, apply, at_end, doc_text, function_for, insertion,
                                    main_guard)
from providers.offline_text import (FuncSpec, TicketText, file_sections, is_test_path,
                                    module_name, named_functions, named_paths, notes_path, slug,
                                    ticket_text, writable)

_TAG = re.compile(r"-(look|read|tail|write|review|check)-\d+\.\d+$")
TAIL_LINES = 40
_CUT = re.compile(r"\n?\[showing lines \d+-\d+[^\]]*\]\s*$")
_COMPILE = "import sys; [compile(open(p, encoding='utf-8').read(), p, 'exec') for p in sys.argv[1:]]"
_MISSING = ("no such file", "no such directory")
_COMMENT = MappingProxyType({ext: mark for mark, exts in (
    ("#", "sh bash toml yaml yml cfg ini rb r pl ex exs"),
    ("//", "js mjs cjs ts tsx jsx go rs java kt c h cc cpp hpp cs fs fsx swift scala php dart"),
    ("--", "sql lua hs")) for ext in exts.split()})


@dataclass
class Known:
    """What the worker knows of the workspace from the request and its tool results."""
    texts: dict[str, str] = field(default_factory=dict)     # path -> whole text
    missing: set[str] = field(default_factory=set)          # read: not there (a new file)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> why it is left alone
    listing: str = ""
    asked: set[str] = field(default_factory=set)            # paths already read (any answer)
    long: dict[str, int] = field(default_factory=dict)      # too long to read whole: lines
    heads: dict[str, str] = field(default_factory=dict)     # ... and their first lines
    partial: set[str] = field(default_factory=set)          # texts[path] is only the tail


@dataclass
class Change:
    path: str
    calls: list[tuple[str, dict[str, Any]]]
    what: str
    new: bool = False


def _pairs(messages: list[Message]) -> list[tuple[ToolCall, dict[str, Any] | None]]:
    results = {r.call_id: r.result for m in messages for r in m.tool_returns}
    return [(c, results.get(c.id)) for m in messages if m.role == "model" for c in m.tool_calls]


def _tag(call: ToolCall) -> str:
    m = _TAG.search(call.id)
    return m.group(1) if m else ""


def _known(first: str, pairs: list[tuple[ToolCall, dict[str, Any] | None]]) -> Known:
    k = Known(texts=file_sections(first))
    for call, res in pairs:
        if res is None:
            continue
        path = str(call.args.get("path", ""))
        if call.name == "list_dir" and path in (".", "") and res.get("ok"):
            k.listing = str(res.get("output", ""))
        if call.name != "read_file" or _tag(call) not in ("look", "read", "tail"):
            continue
        k.asked.add(path)
        if res.get("ok"):
            out = str(res.get("output", ""))
            cut = _CUT.search(out)
            total = re.search(r"\[showing lines \d+-\d+ of (\d+);", out)
            if cut and total and _tag(call) != "tail":
                k.long[path] = int(total.group(1))
                k.heads[path] = out[:cut.start()]
            elif cut:
                k.unreadable[path] = "too long for the offline model to read"
            else:
                k.texts[path] = out
                if _tag(call) == "tail":
                    k.partial.add(path)
        elif any(s in str(res.get("error", "")).lower() for s in _MISSING):
            k.missing.add(path)
        else:
            k.unreadable[path] = str(res.get("error", ""))[:200]
    return k


def _paths(t: TicketText, k: Known) -> tuple[list[str], list[str]]:
    """(paths to change, paths named but refused). With no target files: one sensible path."""
    if t.targets:
        return [p for p in t.targets if writable(p)], [p for p in t.targets if not writable(p)]
    named = named_paths(t.description)
    stems = frozenset(posixpath.basename(p)[:-3] for p in named if p.endswith(".py"))
    funcs = named_functions(t.description, stems)
    code = [p for p in named if p.endswith(".py") and not is_test_path(p)]
    docs = [p for p in named if p.endswith((".md", ".rst", ".txt"))]
    if funcs and code:
        return [code[0]], []
    if docs:
        return [docs[0]], []
    has_docs = any(ln.strip() == "docs/" for ln in k.listing.splitlines())
    return [notes_path(t.ticket_id, t.headline, has_docs)], []


def _module_for_tests(t: TicketText, test_path: str, paths: list[str]) -> str:
    code = [p for p in paths if p.endswith(".py") and not is_test_path(p)]
    code += [p for p in named_paths(t.description) if p.endswith(".py") and not is_test_path(p)]
    if code:
        return module_name(code[0])
    stem = posixpath.basename(test_path)[:-3]
    return stem[5:] if stem.startswith("test_") else stem


def _test_source(funcs: list[Function], taken: str, prefix: str) -> str:
    blocks = []
    for f in funcs:
        name = f"test_{f.name}"
        n = 2
        while re.search(rf"^def {re.escape(name)}\b", taken, re.M):
            name, n = f"test_{f.name}_{n}", n + 1
        body = "".join(f"    {ln}\n" for ln in f.test_lines(prefix))
        blocks.append(f"def {name}():\n{body}")
    return "\n\n".join(blocks)


def _python_change(t: TicketText, path: str, text: str | None, funcs: list[FuncSpec],
                   paths: list[str], head: str | None = None) -> Change:
    """head: a long file's first lines when text is only its tail (then imports go inside
    the new tests, and a function already defined in either part is not added again)."""
    fns = [function_for(s) for s in funcs]
    test = is_test_path(path)
    if test:
        mod = _module_for_tests(t, path, paths)
        names = [f.name for f in fns]
        if text is None:
            top = (f'"""Tests written by {t.ticket_id}: {doc_text(t.headline)}"""\n'
                   f"# STATUS: draft\n")
            if fns:
                src = (top + f"from {mod} import {', '.join(names)}\n\n\n"
                       + _test_source(fns, "", ""))
            else:
                src = (top + "import importlib\n\n\n"
                       f"def test_{slug(mod, 4)}_imports():\n"
                       f"    assert importlib.import_module({mod!r}) is not None\n")
            return Change(path, [("write_file", {"path": path, "content": src})],
                          f"new test file ({', '.join(names) or 'import check'})", new=True)
        calls: list[tuple[str, dict[str, Any]]] = []
        prefix = ""
        line = None if head is not None else re.search(
            rf"^from {re.escape(mod)} import ([\w, ]+?)[ \t]*$", text, re.M)
        if fns and line:
            have = [n.strip() for n in line.group(1).split(",")]
            add = [n for n in names if n not in have]
            if add:
                old = line.group(0)
                new = old + ", " + ", ".join(add)
                calls.append(("edit_file", {"path": path, "old": old, "new": new}))
                text = apply(text, old, new)
        elif fns and head is None and re.search(rf"^import {re.escape(mod)}[ \t]*$", text, re.M):
            prefix = mod + "."
        if fns:
            block = _test_source(fns, (head or "") + text, prefix)
            if not line and not prefix:    # no import of the module to extend: import in place
                block = re.sub(r"^(def test_\w+\(\):\n)",
                               rf"\1    from {mod} import {', '.join(names)}\n", block, flags=re.M)
            what = "added " + ", ".join(f"a test of {n}" for n in names)
        else:
            block = (f"def test_{slug(mod, 4)}_imports_{slug(t.ticket_id, 2)}():\n"
                     f"    import importlib\n"
                     f"    assert importlib.import_module({mod!r}) is not None\n")
            what = f"added an import check of {mod}"
        return _edits(path, text, calls, block, what, 1 if head is None else 3)
    seen = (head or "") + (text or "")
    fresh = [f for f in fns if not re.search(rf"^def {f.name}\b", seen, re.M)]
    if text is None:
        if not fresh:
            return Change(path, [("write_file", {"path": path, "content": legacy_file(
                path, t.ticket_id, t.headline)})], "new file", new=True)
        src = (f'"""{doc_text(t.headline)}\n\nWritten by {t.ticket_id}.\n"""\n# STATUS: draft\n\n\n'
               + "\n\n".join(f.source for f in fresh))
        return Change(path, [("write_file", {"path": path, "content": src})],
                      "new module with " + ", ".join(f.name for f in fresh), new=True)
    if fresh:
        return _edits(path, text, [], "\n\n".join(f.source for f in fresh),
                      "added " + ", ".join(f.name for f in fresh), 1 if head is None else 3)
    return _edits(path, text, [], f"# {t.ticket_id}: {t.headline[:200]}\n",
                  "noted the ticket (no new function named)", 1 if head is None else 3)


def _edits(path: str, text: str, calls: list[tuple[str, dict[str, Any]]], block: str,
           what: str, min_lines: int = 1) -> Change:
    """The edit_file calls that add `block` to a file already there (its existing lines kept):
    above a Python file's main guard, else after its last line."""
    if not text.strip():
        return Change(path, [("write_file", {"path": path, "content": text + block})], what)
    guard = main_guard(text) if path.endswith(".py") else None
    if guard is not None:
        nl = "\r\n" if "\r\n" in text else "\n"
        old, new = insertion(text, guard, block.rstrip("\n").replace("\n", nl) + nl * 3)
    else:
        old, new = at_end(text, block, 2 if path.endswith(".py") else 1, min_lines)
    calls.append(("edit_file", {"path": path, "old": old, "new": new}))
    return Change(path, calls, what)


def _change(t: TicketText, path: str, k: Known, paths: list[str]) -> Change | str:
    """The calls that make the ticket's change to one path, or why it is left alone."""
    if path in k.unreadable:
        return f"{path}: left alone ({k.unreadable[path]})"
    text = k.texts.get(path)
    stems = frozenset(posixpath.basename(p)[:-3] for p in paths if p.endswith(".py"))
    funcs = named_functions(t.description, stems)
    if path in k.long and path not in k.partial:
        return f"{path}: left alone (its end could not be read)"
    if path.endswith(".py"):
        return _python_change(t, path, text, funcs, paths, k.heads.get(path))
    ext = path.rsplit(".", 1)[-1].lower() if "." in posixpath.basename(path) else ""
    if text is None:
        return Change(path, [("write_file", {"path": path, "content": legacy_file(
            path, t.ticket_id, t.description)})], "new file", new=True)
    if ext in ("md", "markdown"):
        block = f"## {t.headline}\n\n{_done_note(t)}\n"
    elif ext == "rst":
        block = f"{t.headline}\n{'-' * max(len(t.headline), 3)}\n\n{_done_note(t)}\n"
    elif ext in ("txt", ""):
        block = f"{t.headline}\n{_done_note(t)}\n"
    elif ext in _COMMENT:
        block = f"{_COMMENT[ext]} {t.ticket_id}: {t.headline[:200]}\n"
    else:
        return f"{path}: left alone (the offline model cannot edit .{ext} files)"
    return _edits(path, text, [], block, "added a section", 3 if path in k.partial else 1)


def _safe_change(t: TicketText, path: str, k: Known, paths: list[str]) -> Change | str:
    try:
        return _change(t, path, k, paths)
    except ValueError as e:        # no text to anchor an edit to: said in the summary
        return f"{path}: left alone ({e})"


def _done_note(t: TicketText) -> str:
    rest = [ln.strip() for ln in t.description.splitlines()[1:] if ln.strip()]
    lines = [f"Ticket {t.ticket_id}" + (f" (track {t.track})" if t.track else "") + "."]
    lines += rest
    return "\n".join(lines)


def legacy_file(path: str, ticket_id: str, description: str) -> str:
    """A new file's draft when the ticket names no function: a module, a test, a page."""
    headline = description.splitlines()[0] if description else ""
    name = posixpath.splitext(posixpath.basename(path))[0]
    if path.endswith(".py"):
        if posixpath.basename(path).startswith("test_"):
            return (f'"""Tests written by {ticket_id}: {doc_text(headline)}"""\n# STATUS: draft\n\n\n'
                    f"def test_{slug(name, 4)}_smoke():\n    assert True is not False\n")
        ident = re.sub(r"\W", "_", name) or "module"
        if not ident.isidentifier():
            ident = "m_" + ident
        return (f'"""{doc_text(headline)}\n\nWritten by {ticket_id}.\n"""\n# STATUS: draft\n\n\n'
                f"def {ident}_info() -> dict:\n"
                f"    return {{\"ticket\": {ticket_id!r}, \"module\": {ident!r}}}\n")
    rest = "".join(f"{ln.strip()}\n" for ln in description.splitlines()[1:] if ln.strip())
    if path.endswith(".md"):
        return f"# {headline}\n\nSTATUS: draft\n\nWritten by {ticket_id}.\n" + (
            f"\n{rest}" if rest else "")
    return f"{headline}\nSTATUS: draft\nWritten by {ticket_id}\n"


def shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def worker_turn(messages: list[Message]) -> tuple[str, list[ToolCall]]:
    """The worker's next answer: (text, tool calls); no calls means the final summary."""
    first = messages[0].text if messages else ""
    t = ticket_text(first)
    turn = sum(1 for m in messages if m.role == "model")
    pairs = _pairs(messages)
    done = {_tag(c) for c, _ in pairs}
    k = _known(first, pairs)

    def calls(tag: str, items: list[tuple[str, dict[str, Any]]]) -> list[ToolCall]:
        return [ToolCall(id=f"{t.ticket_id}-{tag}-{turn}.{i}", name=n, args=a)
                for i, (n, a) in enumerate(items)]

    if turn == 0:
        items: list[tuple[str, dict[str, Any]]] = [("list_dir", {"path": "."})]
        items += [("read_file", {"path": c}) for c in t.context if c not in k.texts]
        items += [("read_file", {"path": p}) for p in t.targets
                  if writable(p) and p not in k.texts and p not in t.context]
        return (f"Ticket {t.ticket_id}: {t.headline}\nI'll look at the workspace first.\n",
                calls("look", items))
    paths, refused = _paths(t, k)
    if "write" not in done:
        unread = [p for p in paths if p not in k.texts and p not in k.asked]
        if unread and "read" not in done:
            return (f"Reading {', '.join(unread)} before changing it.\n",
                    calls("read", [("read_file", {"path": p}) for p in unread]))
        tails = [p for p in paths if p in k.long and p not in k.partial]
        if tails and "tail" not in done:      # a long file: its last lines, to append after
            return (f"Reading the end of {', '.join(tails)}.\n", calls("tail", [
                ("read_file", {"path": p, "offset": max(k.long[p] - TAIL_LINES, 0)})
                for p in tails]))
        changes = [_safe_change(t, p, k, paths) for p in paths]
        items = [c for ch in changes if isinstance(ch, Change) for c in ch.calls]
        if items:
            said = "; ".join(f"{ch.path}: {ch.what}" if isinstance(ch, Change) else ch
                             for ch in changes)
            return f"Changing {said}.\n", calls("write", items)
        left = [ch for ch in changes if isinstance(ch, str)]
        return _summary(t, messages, pairs, [], refused + left, k), []
    written = [str(c.args.get("path", "")) for c, r in pairs
               if _tag(c) == "write" and r is not None and r.get("ok")]
    written = list(dict.fromkeys(written))
    drafts = [p for p in written if p in k.missing or p not in k.texts]
    if "review" not in done and "check" not in done and drafts:
        return (f"Marking {', '.join(drafts)} as reviewed.\n",
                calls("review", [("edit_file", {"path": p, "old": "STATUS: draft",
                                                "new": "STATUS: reviewed"}) for p in drafts]))
    if "check" not in done and written:
        py = [p for p in written if p.endswith(".py")]
        # compile() rather than py_compile: no __pycache__ left in the person's tree
        cmd = (f'python3 -c "{_COMPILE}" ' + " ".join(shell_quote(p) for p in py)
               + " && echo compiled" if py else
               "wc -l " + " ".join(shell_quote(p) for p in written))
        return "Checking the result.\n", calls("check", [("run_shell", {"command": cmd})])
    return _summary(t, messages, pairs, written, refused, k), []


def _summary(t: TicketText, messages: list[Message],
             pairs: list[tuple[ToolCall, dict[str, Any] | None]],
             written: list[str], refused: list[str], k: Known) -> str:
    problems = []
    for call, res in pairs:
        if res is None or res.get("ok", True):
            continue
        if call.name == "read_file" and str(call.args.get("path", "")) in k.missing \
                and str(call.args.get("path", "")) in written:
            continue       # a file that was not there yet: it was then created
        problems.append(f"{call.name}: {str(res.get('error', ''))[:160]}")
    problems += [p if ": left alone" in p else f"{p}: refused (outside what a worker may write)"
                 for p in refused]
    problems += [f"{p}: {why}" for p, why in k.unreadable.items() if p not in written]
    summary = f"Done with {t.ticket_id}. Files: {', '.join(written) or '(none)'}."
    said = [m for m in messages if m.role == "model" and m.tool_calls
            and _tag(m.tool_calls[0]) == "write"]
    if said:
        summary += " " + re.sub(r"^Changing ", "Changed ", said[0].text.strip())
    checks = [r for c, r in pairs if _tag(c) == "check" and r is not None]
    if checks and checks[-1].get("ok") and checks[-1].get("exit_code", 0) == 0:
        out = str(checks[-1].get("output", "")).strip().splitlines()
        summary += f" The check passed ({out[-1][:80] if out else 'exit 0'})."
    if problems:
        summary += " Problems seen: " + "; ".join(dict.fromkeys(problems))
    return summary + "\n"
