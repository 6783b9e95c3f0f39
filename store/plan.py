"""plan.md: read every form real Conductor projects use, and edit it in place, line by line.

A plan is kept as its lines (split on "\\n", so a CR of a CRLF file stays on its line and joining
gives the file back byte for byte) plus what was read from them, with positions: each task's
line, the column of its marker, where its SHA is and in which form. Edits change only the
characters they must: a task's marker, a SHA appended to a task line, `[checkpoint: sha]`
appended to a phase heading; a ticket the plan does not have yet is inserted as new lines.

What is read (the format rules of the Conductor extension, and what projects really contain):
- tasks: `- [ ] text` / `* [x] text` / `+ [~] text` at any indent; `Task:` and `**Task:**` prefixes;
  lines indented deeper than a task (sub-tasks, notes) belong to it;
- phases: `## Phase N: name` (any N, `Phase 0` too) or `### Phase N: name`; any other `##`
  heading is a section whose tasks (if any) are read under its name; `### Tasks` and other
  `###` headings inside a phase are notes;
- SHAs at the end of a task line: bare, `[sha]`, `(sha)` or `` `sha` `` (a note in parentheses
  may follow); `[checkpoint: sha]` at the end of a phase heading;
- a task whose text says "User Manual Verification" is a checkpoint (for the person, not a worker).

Pure functions and per-call data: no thread affinity, no module state.
"""
from __future__ import annotations

from types import MappingProxyType

import re
from collections import Counter
from dataclasses import dataclass, field

from store.errors import LoadProblem
from store.names import one_line, phase_label, short_sha

MARK_STATUS = MappingProxyType({" ": "todo", "~": "in_progress", "x": "completed", "X": "completed"})
TICKET_MARK = MappingProxyType({"completed": "x", "in_progress": "~"})

_TASK_LINE_RE = re.compile(r"^([ \t]*)[-*+][ \t]+\[([^\]]?)\](?!\()[ \t]*(.*)$")
_TASK_PREFIX_RE = re.compile(r"^(\*{0,2})Task\*{0,2}\s*:\*{0,2}\s*", re.IGNORECASE)
_ID_PATTERN = r"[A-Za-z][A-Za-z0-9_]*-\d+(?:[.-][A-Za-z0-9]+)*"
_ID_HEAD_RE = re.compile(rf"^({_ID_PATTERN})(?::|(?=\s)|$)\s*")
_EXPLICIT_ID_RE = re.compile(r"^\[id:\s*([^\]\n]+?)\s*\]\s*")
_SHA_FORMS = (("[]", re.compile(r"\s\[([0-9a-fA-F]{7,40})\]$")),
              ("()", re.compile(r"\s\(([0-9a-fA-F]{7,40})\)$")),
              ("``", re.compile(r"\s`([0-9a-fA-F]{7,40})`$")),
              ("bare", re.compile(r"\s([0-9a-fA-F]{7,40})$")))
_NOTE_TAIL_RE = re.compile(r"\s\([^()]*\)$")
_DEPS_TAIL_RE = re.compile(r"\s*\(\s*depends\s+on\s*:\s*([^()]*)\)$", re.IGNORECASE)
_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*$")
_PHASE_HEAD_RE = re.compile(r"^Phase\s+(\d+)\s*(?:[:.\-\u2013\u2014]\s*(.*))?$", re.IGNORECASE)
_PLAN_TITLE_RE = re.compile(r"^(?:Implementation\s+Plan|Plan)\s*[:\-\u2013\u2014]\s*(.*)$",
                            re.IGNORECASE)
_CHECKPOINT_RE = re.compile(r"\s*\[checkpoint:\s*([0-9a-fA-F]{7,40})\]\s*$", re.IGNORECASE)
_MANUAL_RE = re.compile(r"user\s+manual\s+verification", re.IGNORECASE)


@dataclass
class PlanTask:
    idx: int                 # 0-based index of the task's line
    end: int                 # index after its last continuation line
    indent: int
    marker: str
    marker_col: int          # column of the character between the brackets
    status: str
    explicit_id: str | None
    text: str                # the description: first line and continuation lines
    deps: list[str] | None
    sha: str
    sha_form: str            # "bare", "[]", "()", "``" or "" (none)
    phase: str
    checkpoint: bool
    cont: list[str] = field(default_factory=list)   # continuation lines, de-indented

    @property
    def line(self) -> int:
        return self.idx + 1


@dataclass
class PlanPhase:
    name: str
    idx: int                 # index of its heading line
    checkpoint: str          # the sha of its [checkpoint: sha] tag, or ""
    numbered: bool           # "Phase N: ..." (a section heading is not)
    heading: str = ""        # the heading's text, without #'s and the checkpoint tag


@dataclass
class Plan:
    lines: list[str]
    title: str | None = None
    phases: list[PlanPhase] = field(default_factory=list)
    tasks: list[PlanTask] = field(default_factory=list)
    problems: list[LoadProblem] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines)

    def phase(self, name: str) -> PlanPhase | None:
        """A phase by its name ("Setup"), its heading ("Phase 0: Setup") or its label."""
        return (next((p for p in self.phases if p.name == name), None)
                or next((p for p in self.phases if p.heading == name), None)
                or next((p for p in self.phases if phase_label(p.name) == phase_label(name)), None))

    @property
    def crlf(self) -> bool:
        return bool(self.lines) and self.lines[0].endswith("\r")


def _split_sha(s: str, bare: bool) -> tuple[str, str, str]:
    """Head text -> (text without the SHA, sha, form). A note in parentheses may follow it.
    A bare SHA is read only when `bare` (a ticked task: an open task's text may end in a number)."""
    body = s.rstrip()
    for attempt in range(2):
        for form, rx in _SHA_FORMS:
            if form == "bare" and not bare:
                continue
            m = rx.search(" " + body)
            if m:
                start = m.start() - 1   # in `body` (we prefixed a space)
                rest = s.rstrip()[len(body):] if attempt else ""
                return (body[:max(start, 0)].rstrip() + rest), m.group(1), form
        m = _NOTE_TAIL_RE.search(body)
        if attempt or not m:
            break
        body = body[:m.start()]
    return s.rstrip(), "", ""


def parse_head(text: str, ticked: bool = True) -> tuple[str | None, str, list[str] | None, str, str]:
    """The text after "- [ ] " -> (explicit id, first line of the description, deps, sha, form)."""
    s = text.strip()
    pm = _TASK_PREFIX_RE.match(s)
    bold = False
    if pm:
        bold = pm.group(1) == "**" and "**" not in pm.group(0)[2:]   # "**Task: x**"
        s = s[pm.end():]
    explicit: str | None = None
    m = _EXPLICIT_ID_RE.match(s) if pm or s.startswith("[id:") else None
    if m:
        explicit = m.group(1).strip()
        s = s[m.end():]
    elif pm:
        m = _ID_HEAD_RE.match(s)
        if m:
            explicit = m.group(1)
            s = s[m.end():]
    s, sha, form = _split_sha(s, ticked)
    deps: list[str] | None = None
    m = _DEPS_TAIL_RE.search(s)
    if m:
        items = [x for x in re.split(r"[,\s]+", m.group(1)) if x]
        deps = [] if [x.lower() for x in items] == ["none"] else items
        s = s[:m.start()]
        if not sha:
            s, sha, form = _split_sha(s, ticked)
    s = s.strip()
    if bold and s.endswith("**"):
        s = s[:-2].rstrip()
    return explicit, s, deps, sha, form


def _phase_of_heading(level: int, text: str) -> tuple[str, bool] | None:
    m = _PHASE_HEAD_RE.match(text)
    if m and level in (2, 3):
        name = (m.group(2) or "").strip()
        return (name or f"Phase {m.group(1)}"), True
    if level == 2:
        return text.strip(), False
    return None


def parse_plan(text: str, path: str = "plan.md") -> Plan:
    plan = Plan(lines=text.split("\n"))
    phase = ""
    cur: dict | None = None
    lines = plan.lines

    def close(end: int) -> None:
        nonlocal cur
        if cur is None:
            return
        t, cur = cur, None
        cont = t["cont"]
        body = [c for c in cont if c]
        base = min((len(c) - len(c.lstrip()) for c in body), default=0)
        cont = [c[base:] if c[:base].strip() == "" else c.lstrip() for c in cont]
        explicit, first, deps, sha, form = parse_head(t["head"], t["marker"] in ("x", "X", "~"))
        desc = first + ("\n" + "\n".join(cont) if cont else "")
        marker = t["marker"]
        status = MARK_STATUS.get(marker)
        if status is None:
            plan.problems.append(LoadProblem(path, t["idx"] + 1, (
                f"unrecognised task marker [{marker}] (expected [ ], [~] or [x]); read as [ ]")))
            status = "todo"
        if explicit is None and not desc.strip():
            plan.problems.append(LoadProblem(path, t["idx"] + 1, "empty task; ignored"))
            return
        plan.tasks.append(PlanTask(
            idx=t["idx"], end=t["last"] + 1, indent=t["indent"], marker=marker,
            marker_col=t["col"], status=status, explicit_id=explicit, text=desc, deps=deps,
            sha=sha, sha_form=form, phase=t["phase"], checkpoint=bool(_MANUAL_RE.search(first)),
            cont=cont))

    for i, raw in enumerate(lines):
        content = raw[:-1] if raw.endswith("\r") else raw
        line = content.expandtabs(4).rstrip()
        if not line:
            if cur is not None:
                cur["pending"] += 1
            continue
        indent = len(line) - len(line.lstrip())
        if cur is not None and indent > cur["indent"]:
            cur["cont"].extend([""] * cur["pending"])
            cur["pending"] = 0
            cur["cont"].append(line)
            cur["last"] = i
            continue
        close(i)
        hm = _HEADING_RE.match(content) if indent == 0 else None
        if hm:
            level, htext = len(hm.group(1)), hm.group(2)
            if level == 1 and plan.title is None and not plan.phases and not plan.tasks:
                tm = _PLAN_TITLE_RE.match(htext)
                plan.title = (tm.group(1) if tm else htext).strip()
                continue
            cm = _CHECKPOINT_RE.search(htext)
            got = _phase_of_heading(level, htext[:cm.start()] if cm else htext)
            if got is not None:
                phase = got[0]
                plan.phases.append(PlanPhase(phase, i, cm.group(1) if cm else "", got[1],
                                             (htext[:cm.start()] if cm else htext).strip()))
            continue
        tm = _TASK_LINE_RE.match(content)
        if tm:
            cur = {"idx": i, "last": i, "indent": indent, "marker": tm.group(2),
                   "col": tm.start(2) if tm.group(2) else tm.end(2), "head": tm.group(3),
                   "cont": [], "pending": 0, "phase": phase}
    close(len(lines))
    return plan


# ---------------------------------------------------------------------------------------------
# edits in place
# ---------------------------------------------------------------------------------------------

def _split_cr(line: str) -> tuple[str, str]:
    return (line[:-1], "\r") if line.endswith("\r") else (line, "")


def set_marker(plan: Plan, task: PlanTask, mark: str) -> bool:
    """`[ ]` -> `[mark]` on the task's line; nothing else on it changes."""
    if task.marker == mark:
        return False
    line = plan.lines[task.idx]
    col, width = task.marker_col, len(task.marker)
    plan.lines[task.idx] = line[:col] + mark + line[col + width:]
    task.marker, task.status = mark, MARK_STATUS[mark]
    _reread(plan, task)    # a bare SHA is read on ticked tasks only: what the line says now
    return True


def _reread(plan: Plan, task: PlanTask) -> None:
    """Refresh what `task` says from its (edited) line, as parse_plan would read it."""
    content, _ = _split_cr(plan.lines[task.idx])
    m = _TASK_LINE_RE.match(content)
    assert m is not None, "an edited task line is still a task line"
    _, first, deps, sha, form = parse_head(m.group(3), task.marker in ("x", "X", "~"))
    task.text = first + ("\n" + "\n".join(task.cont) if task.cont else "")
    task.deps, task.sha, task.sha_form = deps, sha, form


def sha_form(plan: Plan) -> str:
    """The form the plan already writes SHAs in (the most common); bare, the extension's, if none."""
    counts = Counter(t.sha_form for t in plan.tasks if t.sha_form)
    return counts.most_common(1)[0][0] if counts else "bare"


def format_sha(sha7: str, form: str) -> str:
    return {"[]": f"[{sha7}]", "()": f"({sha7})", "``": f"`{sha7}`"}.get(form, sha7)


def append_sha(plan: Plan, task: PlanTask, sha: str, form: str | None = None) -> bool:
    """Append the short SHA to a task line that has none, in the plan's form."""
    sha7 = short_sha(sha)
    if not sha7 or task.sha:
        return False
    form = form or sha_form(plan)
    content, cr = _split_cr(plan.lines[task.idx])
    body = content.rstrip()
    plan.lines[task.idx] = f"{body} {format_sha(sha7, form)}{content[len(body):]}{cr}"
    task.sha, task.sha_form = sha7, form
    return True


def remove_sha(plan: Plan, task: PlanTask) -> bool:
    """Take the SHA off a task line (its commit was reverted): the inverse of append_sha."""
    if not task.sha:
        return False
    content, cr = _split_cr(plan.lines[task.idx])
    token = " " + format_sha(task.sha, task.sha_form or "bare")
    at = content.rfind(token)
    if at < 0:
        return False
    plan.lines[task.idx] = content[:at] + content[at + len(token):] + cr
    _reread(plan, task)
    return True


def append_checkpoint(plan: Plan, phase: PlanPhase, sha: str) -> bool:
    """` [checkpoint: sha7]` at the end of the phase's heading, as the extension writes it."""
    sha7 = short_sha(sha)
    if not sha7:
        raise ValueError(f"not a commit SHA: {sha!r}")
    if phase.checkpoint:
        return False
    content, cr = _split_cr(plan.lines[phase.idx])
    body = content.rstrip()
    plan.lines[phase.idx] = f"{body} [checkpoint: {sha7}]{content[len(body):]}{cr}"
    phase.checkpoint = sha7
    return True


def readable_first_line(first: str, deps: list[str] | None, ticked: bool, tail: str = "") -> str:
    """A description's first line as a task line says it, so that reading it back gives it
    whole. One that ends in what the reader takes for a dependency list, `(depends on: ...)`,
    is followed by the ticket's own list (`none` when it has none): a ticket described
    "Wire the client (depends on: the new API)" was read back as "Wire the client" depending on
    "the", "new" and "API", and its plan line was written again (issue 20, defect 17). `tail`
    is what follows the text on the line (a SHA)."""
    first = one_line(first).strip()
    if deps is None or parse_head(first + tail, ticked)[1] == first:
        return first
    guarded = f"{first} (depends on: {', '.join(deps) or 'none'})"
    return guarded if parse_head(guarded + tail, ticked)[1] == first else first


def task_lines(description: str, status: str, sha: str, indent: str = "",
               deps: list[str] | None = None) -> list[str]:
    """A new task's lines in the extension's form: `- [ ] Task: text`, more lines indented 4.
    With `deps` (the ticket's dependencies), a first line the reader would misread keeps its
    text (`readable_first_line`)."""
    first, *rest = description.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    sha7 = short_sha(sha)
    first = readable_first_line(first, deps, status == "completed", f" {sha7}" if sha7 else "")
    head = f"{indent}- [{TICKET_MARK.get(status, ' ')}] Task: {first.strip()}".rstrip()
    sha7 = short_sha(sha)
    if sha7:
        head += f" {sha7}"
    return [head] + [f"{indent}    {r.rstrip()}" if r.strip() else "" for r in rest]


def _lead(s: str) -> str:
    return s[:len(s) - len(s.lstrip())]


def set_description(plan: Plan, task: PlanTask, description: str,
                    deps: list[str] | None = None) -> bool:
    """The task's text changed (the person edited it in the app; the engine ticked its sub-task
    lines): its lines say the new text. Each changed line is edited in place (its indentation,
    tabs, marker, prefix, SHA and trailing spaces stay) when the text has as many lines as
    before; otherwise the task's continuation lines are written anew, indented 4 under it.
    Returns True if lines were added or removed (positions changed: re-parse)."""
    if description == task.text:
        return False
    content, cr = _split_cr(plan.lines[task.idx])
    m = _TASK_LINE_RE.match(content)
    assert m is not None, "a parsed task line is a task line"
    head = m.group(3)
    _, first, _, _, _ = parse_head(head, task.marker in ("x", "X", "~"))
    new_first, *rest = description.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    at = head.find(first) if first else -1
    if at < 0:
        return False
    after = head[at + len(first):]
    ticked = task.marker in ("x", "X", "~")
    shown = one_line(new_first) if _DEPS_TAIL_RE.search(after.rstrip()) else \
        readable_first_line(new_first, deps, ticked, after.rstrip())
    new_head = content[:m.start(3)] + head[:at] + shown + after + cr
    if len(rest) == len(task.cont) and all(
            old == new or (old.strip() and new.strip() and _lead(old) == _lead(new))
            for old, new in zip(task.cont, rest)):
        plan.lines[task.idx] = new_head
        for k, (old, new) in enumerate(zip(task.cont, rest)):
            if old == new:
                continue
            raw, rcr = _split_cr(plan.lines[task.idx + 1 + k])
            start, stop = len(_lead(raw)), len(raw.rstrip())
            plan.lines[task.idx + 1 + k] = raw[:start] + new.strip() + raw[stop:] + rcr
        task.cont = list(rest)
        _reread(plan, task)
        return False
    pad = " " * (task.indent + 4)
    new_lines = [new_head] + [f"{pad}{r.rstrip()}{cr}" if r.strip() else cr for r in rest]
    plan.lines[task.idx:task.end] = new_lines
    return True


def insert_tasks(plan: Plan, new: list[tuple[str, list[str]]]) -> None:
    """Insert new tasks' lines ((phase label, lines) in order): after the last task of their
    phase, or in a new `## Phase N: label` at the end."""
    cr = "\r" if plan.crlf else ""
    at_end: list[str] = []
    after: dict[int, list[str]] = {}
    numbered = sum(1 for p in plan.phases if p.numbered)
    new_phases: dict[str, list[str]] = {}
    for label, lines in new:
        ph = next((p for p in plan.phases if phase_label(p.name) == label), None)
        if ph is not None:
            last = [t for t in plan.tasks if t.phase == ph.name]
            pos = last[-1].end if last else ph.idx + 1
            after.setdefault(pos, []).extend(lines)
        else:
            new_phases.setdefault(label, []).extend(lines)
    for label, lines in new_phases.items():
        numbered += 1
        at_end += ["", f"## Phase {numbered}: {label}"] + lines
    out: list[str] = []
    for i, line in enumerate(plan.lines):
        if i in after:
            out += [x + cr for x in after.pop(i)]
        out.append(line)
    tail = [x + cr for x in at_end]
    if after:   # positions at the very end
        for pos in sorted(after):
            tail = [x + cr for x in after[pos]] + tail
    if tail:
        if out and out[-1] == "":          # the file ends with a newline: keep it last
            out[-1:] = tail + [""]
        else:
            out += tail
    plan.lines[:] = out


def new_plan_text(title: str) -> str:
    """A new plan's first line, as the extension writes it; tasks are inserted after it."""
    return f"# Implementation Plan: {one_line(title)}\n"
