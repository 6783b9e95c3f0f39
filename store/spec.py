"""spec.md: read the title, the goal (an Overview/Goal/Summary/Objective section) and the
acceptance criteria; edit one of them in place when a person changed it in the app; write a new
spec in the sections the Conductor extension's newTrack prompt names.

Pure functions; no thread affinity, no state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from models import Track
from store.names import one_line, strip_blank

_SPEC_TITLE_RE = re.compile(
    r"^(?:Specification|Spec|Track Specification|Feature Specification)\s*[:\-\u2013\u2014]\s*(.*)$",
    re.IGNORECASE)
_SECTION_NUMBER_RE = re.compile(r"^\d+(?:\.\d+)*[.)]?\s+")
_BULLET_RE = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s+(.*)$")
_OVERVIEW_NAMES = frozenset({"overview", "goal", "goals", "summary", "objective"})


@dataclass
class Spec:
    lines: list[str]
    title: str | None = None
    title_idx: int | None = None
    # (heading, index of the heading line, index after the section's last line)
    sections: list[tuple[str, int, int]] = field(default_factory=list)

    def section(self, kind: str) -> tuple[str, int, int] | None:
        return next((s for s in self.sections if section_kind(s[0]) == kind), None)

    def body(self, kind: str) -> list[str] | None:
        s = self.section(kind)
        return None if s is None else [x.rstrip() for x in self.lines[s[1] + 1:s[2]]]

    @property
    def goal(self) -> str | None:
        body = self.body("overview")
        return None if body is None else parse_goal(body)

    @property
    def criteria(self) -> list[str] | None:
        body = self.body("ac")
        return None if body is None else parse_criteria(body)


def section_kind(heading: str) -> str | None:
    name = heading.lstrip("#").strip().rstrip(":").strip()
    name = _SECTION_NUMBER_RE.sub("", name).lower()
    if name in _OVERVIEW_NAMES:
        return "overview"
    if name.startswith("acceptance criteria") or name == "acceptance":
        return "ac"
    if name.startswith("out of scope"):
        return "oos"
    return None


def parse_spec(text: str) -> Spec:
    spec = Spec(lines=text.split("\n"))
    for i, raw in enumerate(spec.lines):
        line = raw.rstrip()
        if line.startswith("## ") or line == "##":
            if spec.sections:
                h, at, _ = spec.sections[-1]
                spec.sections[-1] = (h, at, i)
            spec.sections.append((line, i, len(spec.lines)))
        elif line.startswith("# ") and spec.title is None and not spec.sections:
            h = line[2:].strip()
            m = _SPEC_TITLE_RE.match(h)
            spec.title, spec.title_idx = (m.group(1) if m else h).strip(), i
    return spec


def parse_goal(body: list[str]) -> str:
    return "\n".join(line.rstrip() for line in strip_blank(body)).strip()


def render_goal(goal: str) -> list[str]:
    g = goal.replace("\r\n", "\n").strip()
    return [line.rstrip() for line in g.split("\n")] if g else []


def parse_criteria(body: list[str]) -> list[str]:
    out: list[str] = []
    cur: list[str] | None = None
    for line in body:
        if not line.strip():
            continue
        m = _BULLET_RE.match(line)
        if m:
            cur = [m.group(1).strip()]
            out.append("")
        elif cur is not None and line[:1].isspace():
            cur.append(line.strip())
        else:
            cur = [line.strip()]
            out.append("")
        out[-1] = "\n".join(cur)
    return out


def render_criteria(criteria: list[str]) -> list[str]:
    out: list[str] = []
    for c in criteria:
        lines = [x.strip() for x in c.replace("\r\n", "\n").strip().split("\n") if x.strip()]
        if not lines:
            continue
        out.append(f"- {lines[0]}")
        out += [f"  {x}" for x in lines[1:]]
    return out


def goal_differs(spec: Spec, goal: str) -> bool:
    return (spec.goal or "") != parse_goal(render_goal(goal))


def criteria_differ(spec: Spec, criteria: list[str]) -> bool:
    return (spec.criteria or []) != parse_criteria(render_criteria(criteria))


def edit_spec(spec: Spec, track: Track) -> bool:
    """The person changed the goal or the criteria in the app: that section's body (only) says
    the new text; a section the spec lacks is added at its end. Title and every other line stay."""
    changed = False
    cr = "\r" if spec.lines and spec.lines[0].endswith("\r") else ""
    for kind, differs, body, heading in (
            ("ac", criteria_differ(spec, track.acceptance_criteria),
             render_criteria(track.acceptance_criteria), "## Acceptance Criteria"),
            ("overview", goal_differs(spec, track.goal), render_goal(track.goal), "## Overview")):
        if not differs:
            continue
        sec = spec.section(kind)
        new = ([cr] + [x + cr for x in body] + [""]) if body else [""]
        if sec is not None:
            _, at, end = sec
            # keep the blank line(s) that separate it from the next section, if it had them
            spec.lines[at + 1:end] = new if end < len(spec.lines) else new[:-1] + [""]
        else:
            if spec.lines and spec.lines[-1] == "":
                spec.lines[-1:] = ["", heading + cr] + new
            else:
                spec.lines += ["", heading + cr] + new[:-1]
        changed = True
        spec.__dict__.update(parse_spec("\n".join(spec.lines)).__dict__)
    return changed


def new_spec_text(track: Track) -> str:
    """A spec for a track Clutch creates, in the sections the extension's newTrack names."""
    out = [f"# Specification: {one_line(track.title)}", "", "## Overview", ""]
    goal = render_goal(track.goal)
    out += (goal + [""]) if goal else []
    out += ["## Functional Requirements", "",
            "- See the [implementation plan](./plan.md) for the tasks that deliver this track.", "",
            "## Acceptance Criteria", ""]
    crit = render_criteria(track.acceptance_criteria)
    out += (crit + [""]) if crit else []
    out += ["## Out of Scope", "", "- Nothing listed yet.", ""]
    return "\n".join(out)
