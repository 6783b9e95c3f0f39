"""Property: plan.md in every form real projects use (titles or none, `Phase 0`, `### Phase`,
sections that are not phases, `### Tasks` sub-headings, notes, `-`/`*`/`+` bullets, `Task:` and
`**Task:**` or no prefix, SHAs bare/[sha]/(sha)/`sha`, checkpoint tags, sub-tasks at any indent,
CRLF, a BOM, no final newline, trailing spaces) is saved unchanged byte for byte when nothing
changed, and ticking one task changes exactly that one line: its marker, and its SHA appended."""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conductor_store import ConductorStore

WORDS = ["add", "the", "login", "form", "write", "tests", "for", "route", "docs", "update",
         "config", "parse", "user", "fix", "crash", "on", "exit", "cache", "API", "`main.py`",
         "README", "make", "it", "fast", "Phase", "step", "&", "—", "naïve", "verify"]
HEX = "0123456789abcdef"
TID = "prop_track_20260101"

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
sha7 = st.text(HEX, min_size=7, max_size=7).filter(lambda s: any(c.isdigit() for c in s))


@st.composite
def task(draw) -> list[str]:
    marker = draw(st.sampled_from([" ", " ", "~", "x", "X"]))
    bullet = draw(st.sampled_from(["-", "-", "*", "+"]))
    prefix = draw(st.sampled_from(["Task: ", "Task: ", "**Task: ", "", "Task 1.2: "]))
    text = draw(words)
    if draw(st.booleans()) and draw(st.booleans()):
        text = f"Conductor - User Manual Verification '{draw(words)}' (Protocol in workflow.md)"
    head = f"{bullet} [{marker}] {prefix}{text}" + ("**" if prefix.startswith("**") else "")
    forms = ["", "[{}]", "({})", "`{}`"] + (["{}", "{}"] if marker in "xX" else [])
    form = draw(st.sampled_from(forms))
    if form:
        head += " " + form.format(draw(sha7))
        if draw(st.booleans()) and form == "{}":
            head += " (80% coverage)"
    head += draw(st.sampled_from(["", "", " "]))
    lines = [head]
    indent = draw(st.sampled_from(["  ", "    ", "\t", "      "]))
    for _ in range(draw(st.integers(0, 3))):
        sub = draw(st.sampled_from([f"- [{draw(st.sampled_from(' x~'))}] ", "- ", ""])) + draw(words)
        lines.append(indent + sub)
    return lines


@st.composite
def plan_text(draw) -> tuple[str, bool]:
    lines: list[str] = []
    title = draw(st.sampled_from(["# Implementation Plan: {}", "# Implementation Plan - {}",
                                  "# Track: {}", "# {}", None]))
    if title:
        lines += [title.format(draw(words)), ""]
    if draw(st.booleans()):
        lines += ["> " + draw(words), "", "---", ""]
    first = draw(st.integers(0, 2))
    for n in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["phase", "phase", "phase3", "section", "final"]))
        if kind == "phase":
            head = f"## Phase {first + n}: {draw(words)}"
        elif kind == "phase3":
            head = f"### Phase {first + n}: {draw(words)}"
        elif kind == "section":
            head = "## Overview"
        else:
            head = "## Final Verification"
        if kind.startswith("phase") and draw(st.booleans()):
            head += f" [checkpoint: {draw(sha7)}]"
        lines.append(head)
        lines += [""] * draw(st.integers(0, 1))
        if draw(st.booleans()):
            lines += [draw(words) + ".", ""]
        if draw(st.booleans()):
            lines += ["### Tasks", ""]
        if kind != "section":
            for _ in range(draw(st.integers(1, 4))):
                lines += draw(task())
                lines += [""] * draw(st.integers(0, 1))
        lines.append("")
    eol = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    text = eol.join(lines)
    if not draw(st.booleans()):
        text = text.rstrip("\r\n")
    return text, draw(st.booleans()) and draw(st.booleans())


def _project(root: Path, text: str, bom: bool) -> Path:
    folder = root / "conductor" / "tracks" / TID
    folder.mkdir(parents=True)
    (root / "conductor" / "tracks.md").write_text(
        f"# Project Tracks\n\n---\n\n- [~] **Track: Prop track**\n*Link: [./tracks/{TID}/](./tracks/{TID}/)*\n")
    (folder / "plan.md").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return folder / "plan.md"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_text(), st.data())
def test_noop_save_is_byte_identical_and_a_tick_changes_one_line(generated, data):
    text, bom = generated
    root = Path(tempfile.mkdtemp(prefix="clutch-prop-"))
    try:
        path = _project(root, text, bom)
        original = path.read_bytes()
        store = ConductorStore(root)
        track, _ = store.load_track(TID)
        store.save_track(track)
        assert path.read_bytes() == original

        open_ = [k for k in track.tickets if k.status != "completed"]
        if not open_:
            return
        k = data.draw(st.sampled_from(open_))
        k.status = "completed"
        k.commit_sha = "abcdef0123456789abcdef0123456789abcdef01"
        store.save_track(track)
        before = original.decode("utf-8").split("\n")
        after = path.read_bytes().decode("utf-8").split("\n")
        assert len(after) == len(before)
        diff = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(diff) == 1, diff
        old, new = diff[0]
        m = re.match(r"^(\ufeff?\s*[-*+]\s+\[)(.?)(\].*?)(\r?)$", old)
        assert m is not None
        assert new.startswith(m.group(1) + "x]")
        tail = new[len(m.group(1)) + 2:]
        rest = m.group(3)[1:]
        body = rest.rstrip()
        assert tail == rest + m.group(4) or re.fullmatch(
            re.escape(body) + r" (abcdef0|\[abcdef0\]|\(abcdef0\)|`abcdef0`)" + re.escape(rest[len(body):] + m.group(4)),
            tail), (old, new)
        again, _ = ConductorStore(root).load_track(TID)
        assert again.ticket(k.id).status == "completed"
        assert again.ticket(k.id).commit_sha.startswith("abcdef0")
    finally:
        shutil.rmtree(root, ignore_errors=True)
