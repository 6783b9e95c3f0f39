"""The offline model's planners: Tier 1 (tracks) and Tier 2 (tickets) as JSON.

When the request carries a repository map (prompts.tier1_sections / tier2_sections), the plan
follows the code that is there: tickets target the files the task names (existing files are
edited in place), a test goes to the test file that already covers that code (or the tests/
folder, or beside the code), new code goes beside related code. Without a map (the older
"WORKSPACE FILES" requests) the planners keep their first behaviour: a package under src/.

Threads: any (pure functions). State: none.
"""
from __future__ import annotations

import json
import posixpath
import re

from prompts import MAP_HEADING, MapFile, parse_map
from providers.offline_text import (digest, is_code_path, is_test_path, named_functions,
                                    named_paths, section, slug, test_path_for, wants_docs,
                                    wants_tests, beside_related)


def _has_map(user: str) -> bool:
    return f"\n{MAP_HEADING}:\n" in f"\n{user}"


def _dump(key: str, items: list[dict[str, object]]) -> str:
    return json.dumps({key: items}, indent=1, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# What a task asks of the repository, from its text and the map
# ---------------------------------------------------------------------------------------------

class Scope:
    """The files a task's text names or implies, resolved against the map."""

    def __init__(self, text: str, files: list[MapFile]):
        self.text = text
        self.mapped = [f.path for f in files]
        self.by_path = {f.path: f for f in files}
        named = [f.path for f in files if f.reason == "named by the task"]
        named += [p for p in named_paths(text) if p not in named]
        stems = frozenset(posixpath.basename(p)[:-3] for p in named if p.endswith(".py"))
        self.funcs = named_functions(text, stems)
        self.code = [p for p in named if is_code_path(p)]
        self.tests = [p for p in named if is_test_path(p)]
        self.other = [p for p in named if p not in self.code and p not in self.tests]
        self.names_code = bool(self.code)       # the text itself names a code file
        if not self.code and (self.funcs or not self.other) and not self.tests:
            base = self.funcs[0].name if self.funcs else slug(
                re.sub(r"\b(?:tests?|testing|tested|helpers?|module|code)\b", " ", text), 2)
            self.code = [beside_related(self.mapped, base, text)]
        self.with_tests = wants_tests(text) or any(is_test_path(p) for p in self.mapped)

    def test_for(self, code: str) -> str:
        """An existing test file that imports `code`, else where a new one belongs."""
        for f in self.by_path.values():
            if is_test_path(f.path) and f.reason == f"imports {code}":
                return f.path
        stem = posixpath.basename(code).rsplit(".", 1)[0]
        for t in self.tests:            # a test file the task names for this code
            if posixpath.basename(t) in (f"test_{stem}.py", f"{stem}_test.py"):
                return t
        return test_path_for(code, self.mapped)

    def signature(self) -> str:
        return ", ".join(f"{f.name}({', '.join(f.params or ())})" for f in self.funcs)


def _first_sentence(text: str, limit: int = 300) -> str:
    one = " ".join(text.split())
    m = re.match(r"(.+?[.!?])(?:\s|$)", one)
    return (m.group(1) if m else one)[:limit]


# ---------------------------------------------------------------------------------------------
# Tier 1
# ---------------------------------------------------------------------------------------------

def tier1(user: str) -> str:
    epic = section(user, "EPIC") or user.strip() or "the epic"
    if not _has_map(user):
        return _tier1_listing(epic)
    scope = Scope(epic, parse_map(user))
    subject = " ".join(epic.split()[:12])
    what = scope.signature()
    files = [*scope.code, *scope.other]
    tests = list(dict.fromkeys(scope.test_for(c) for c in scope.code)) if scope.with_tests else []
    goal = epic.strip()[:400]
    goal += f"\nFiles to change: {', '.join(files)}." if files else ""
    goal += f"\nTests go in: {', '.join(tests)}." if tests else ""
    criteria = [f"{f.name}() is defined in {scope.code[0]} and does what the epic asks"
                for f in scope.funcs[:4] if scope.code]
    criteria += [f"Everything {p} defined before still works" for p in files
                 if p in scope.by_path]
    if tests:
        criteria.append(f"{' and '.join(tests)} test{'s' if len(tests) == 1 else ''} the change"
                        + (f" ({what})" if what else ""))
    criteria.append("Every changed Python file compiles")
    tracks = [{"title": f"Core: {subject}"[:120], "goal": goal, "acceptance_criteria": criteria}]
    if wants_docs(epic) and not any(p.endswith((".md", ".rst")) for p in scope.other):
        readme = next((p for p in scope.mapped if p.lower() in ("readme.md", "readme.rst")),
                      f"docs/{slug(epic)}.md")
        tracks.append({"title": f"Docs: {subject}"[:120],
                       "goal": f"Describe {subject} in {readme}.",
                       "acceptance_criteria": [f"{readme} explains the change"]})
    return json.dumps({"tracks": tracks}, indent=1, ensure_ascii=False)


def _tier1_listing(epic: str) -> str:
    subject = " ".join(epic.split()[:12])
    subject_l = subject[0].lower() + subject[1:] if subject else subject
    s = slug(epic)
    tracks = [
        {"title": f"Core: {subject}"[:120],
         "goal": f"Implement the heart of the epic: {epic.strip()[:400]}",
         "acceptance_criteria": [f"The {s.replace('_', ' ')} code exists under src/",
                                 "Every new module compiles",
                                 "Changes are limited to the files the tickets name"]},
        {"title": f"Tests: {subject}"[:120],
         "goal": f"Cover {subject_l} with automated tests.",
         "acceptance_criteria": ["A test module exercises the new code", "The tests compile"]},
    ]
    if digest(epic) % 2 == 0 or len(epic) > 200:
        tracks.append({"title": f"Docs: {subject}"[:120],
                       "goal": f"Explain {subject_l} to the next developer.",
                       "acceptance_criteria": ["A markdown page describes the change"]})
    return json.dumps({"tracks": tracks}, indent=1, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Tier 2
# ---------------------------------------------------------------------------------------------

def _first_number(user: str) -> int:
    try:
        return int(section(user, "FIRST TICKET NUMBER") or "1")
    except ValueError:
        return 1


def tier2(user: str) -> str:
    title = section(user, "TRACK") or "work"
    if not _has_map(user):
        return _tier2_listing(title, _first_number(user))
    goal = section(user, "GOAL")
    criteria = section(user, "ACCEPTANCE CRITERIA")
    text = f"{title}\n{goal}\n{criteria}"
    scope = Scope(text, parse_map(user))
    n = _first_number(user)
    tickets: list[dict[str, object]] = []

    def add(description: str, targets: list[str], context: list[str], deps: list[str]) -> str:
        tid = f"T-{n + len(tickets):03d}"
        tickets.append({"id": tid, "description": description, "target_files": targets,
                        "context_requirements": [c for c in context if c not in targets][:3],
                        "depends_on": deps})
        return tid

    task = _first_sentence(next((ln for ln in goal.splitlines() if ln.strip()), title))
    # a track that names code to change is not a docs track, even when its epic says "document"
    docs_only = title.lower().startswith("docs") or (
        wants_docs(title) and not scope.funcs and not scope.names_code)
    if docs_only:
        page = next((p for p in scope.other if p.endswith((".md", ".rst", ".txt"))),
                    next((p for p in scope.mapped if p.lower() in ("readme.md", "readme.rst")),
                         f"docs/{slug(title)}.md"))
        add(f"Describe the change in {page}: {task}", [page], scope.code[:2], [])
        return _dump("tickets", tickets)
    sig = scope.signature()
    code_ids: dict[str, str] = {}
    for code in scope.code:
        importers = [f.path for f in scope.by_path.values() if f.reason == f"imports {code}"]
        what = f"Add {sig} to {code}." if sig else f"In {code}: {task}"
        code_ids[code] = add(_with_task(what, task, scope, code), [code], importers, [])
    for other in scope.other:
        add(f"Update {other}: {task}", [other], [], [])
    if scope.with_tests:
        by_test: dict[str, list[str]] = {}
        for code in scope.code:
            by_test.setdefault(scope.test_for(code), []).append(code)
        for t in scope.tests:           # a named test file tests the track's code: after it
            by_test.setdefault(t, list(scope.code))
        for test, codes in by_test.items():
            src = codes[0] if codes else (scope.code[0] if scope.code else "")
            what = f"Test {sig} of {src} in {test}." if sig and src else f"Add tests to {test}."
            add(_with_task(what, task, scope, src), [test], codes,
                [code_ids[c] for c in codes if c in code_ids])
    return _dump("tickets", tickets)


def _with_task(what: str, task: str, scope: Scope, path: str) -> str:
    """The ticket's line, then the track's task when it says more than the line does."""
    told = all(f.name in what for f in scope.funcs) and path in task
    return what if told and all(f.name in task for f in scope.funcs) else f"{what} ({task})"


def _tier2_listing(title: str, first: int) -> str:
    s = slug(title)
    n = 4 + digest(title) % 3
    ids = [f"T-{first + i:03d}" for i in range(n)]
    specs = [
        (f"Create the package skeleton for {s}", [f"src/{s}/__init__.py"], [], []),
        (f"Implement the core logic of {s}", [f"src/{s}/core.py"], [0], ["README.md"]),
        (f"Implement the helpers of {s}", [f"src/{s}/helpers.py"], [0], []),
        (f"Add tests for {s}", [f"tests/test_{s}.py"], [1, 2], []),
        (f"Document {s}", [f"docs/{s}.md"], [0], []),
        (f"Write the change notes for {s}", [f"docs/{s}_changes.md"], [3, 4], []),
    ][:n]
    tickets = [{"id": ids[i], "description": d, "target_files": files,
                "context_requirements": ctx, "depends_on": [ids[j] for j in deps]}
               for i, (d, files, deps, ctx) in enumerate(specs)]
    return _dump("tickets", tickets)
