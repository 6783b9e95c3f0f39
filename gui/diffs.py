"""Reading a change: a unified diff split per file (`split_files`), drawn as a list of the
files changed beside the coloured diff, where a click on a file scrolls the diff to it
(`files_and_diff`); and a checks report with its marks coloured (`checks_report`).

GUI thread only. State: none of its own; the selected file and a pending jump live in the
caller's record (`gui.state.TicketDetailState` or the approval's view), passed in.
"""
from __future__ import annotations

from imgui_bundle import ImVec2, imgui

from gui.records import DiffPick
from gui.state import AppState
from gui.theme import AMBER, BLUE, DIM, GREEN, GREY, RED, em
from gui.widgets import mono_pop, mono_push


def split_files(diff: str) -> tuple[list[str], dict[str, int]]:
    """The diff's lines, and the line where each file's section starts (`diff --git a/X b/Y`
    names Y; a deleted file keeps its old name)."""
    lines = diff.splitlines()
    starts: dict[str, int] = {}
    for i, ln in enumerate(lines):
        if ln.startswith("diff --git "):
            rest = ln[len("diff --git "):]
            name = rest.split(" b/", 1)[1] if " b/" in rest else rest
            starts.setdefault(name.strip(), i)
    return lines, starts


def file_stats(lines: list[str], starts: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Lines added and removed per file of a split diff."""
    order = sorted(starts.items(), key=lambda kv: kv[1])
    out: dict[str, tuple[int, int]] = {}
    for n, (name, at) in enumerate(order):
        end = order[n + 1][1] if n + 1 < len(order) else len(lines)
        body = lines[at:end]
        out[name] = (sum(1 for x in body if x.startswith("+") and not x.startswith("+++")),
                     sum(1 for x in body if x.startswith("-") and not x.startswith("---")))
    return out


def parsed(diff: str, pick: DiffPick) -> tuple[list[str], dict[str, int], dict[str, tuple[int, int]]]:
    """The diff split and counted once, not every frame (a merge's diff may be 200 kB)."""
    if not pick.parsed or pick.parsed[0] is not diff:
        lines, starts = split_files(diff)
        pick.parsed = (diff, lines, starts, file_stats(lines, starts))
        if pick.selected not in starts:        # another diff: its own selection
            pick.selected, pick.jump_to = "", None
    return pick.parsed[1], pick.parsed[2], pick.parsed[3]


def line_colour(ln: str):
    if ln.startswith("+++") or ln.startswith("---"):
        return GREY
    if ln.startswith("+"):
        return GREEN
    if ln.startswith("-"):
        return RED
    if ln.startswith("@@"):
        return BLUE
    if ln.startswith("diff --git"):
        return AMBER
    return None


def diff_lines(app: AppState, child_id: str, lines: list[str], height: float,
               jump_line: int | None = None) -> None:
    """The diff in a scrolling child, only the visible lines drawn (ListClipper); `jump_line`
    scrolls to that line this frame."""
    imgui.begin_child(child_id, ImVec2(-1, height), imgui.ChildFlags_.borders,
                      imgui.WindowFlags_.horizontal_scrollbar)
    pushed = mono_push(app)
    line_h = imgui.get_text_line_height_with_spacing()
    if jump_line is not None:
        imgui.set_scroll_y(jump_line * line_h)
    if not lines:
        imgui.text_disabled("(no changes)")
    clipper = imgui.ListClipper()
    clipper.begin(len(lines), line_h)
    while clipper.step():
        for i in range(clipper.display_start, clipper.display_end):
            ln = lines[i]
            colour = line_colour(ln)
            if colour is None:
                imgui.text_wrapped(ln)
            else:
                imgui.text_colored(colour, ln)
    mono_pop(pushed)
    imgui.end_child()


def files_and_diff(app: AppState, child_id: str, files: list[str], diff: str, height: float,
                   pick: DiffPick) -> None:
    """The files changed (click one to scroll the diff to it) beside the diff itself."""
    lines, starts, stats = parsed(diff, pick)
    names = files or list(starts)
    list_w = min(em(16).x, imgui.get_content_region_avail().x * 0.3)
    imgui.begin_child(f"{child_id}-files", ImVec2(list_w, height), imgui.ChildFlags_.borders)
    imgui.text_disabled(f"{len(names)} file{'s' if len(names) != 1 else ''} changed")
    for i, name in enumerate(names):
        # the id is the file's place, not its path: a path's "/" would split a test's item ref
        w = imgui.get_content_region_avail().x - (em(4.5).x if name in stats else 0)
        clicked, _ = imgui.selectable(f"{name}###file-{i}", name == pick.selected, 0,
                                      ImVec2(max(w, em(3).x), 0))
        if clicked:
            pick.selected = name
            pick.jump_to = name
        added, removed = stats.get(name, (0, 0))
        imgui.set_item_tooltip(f"{name}\n+{added} −{removed} lines")
        if name in stats:
            imgui.same_line()
            imgui.text_colored(GREEN, f"+{added}")
            imgui.same_line(0, em(0.3).x)
            imgui.text_colored(RED, f"−{removed}")
    imgui.end_child()
    imgui.same_line()
    jump = None
    if pick.jump_to is not None:
        jump = starts.get(pick.jump_to)
        pick.jump_to = None
    diff_lines(app, f"{child_id}-diff", lines, height, jump)


def checks_report(text: str) -> None:
    """A checks report: ✓ lines green, ✗ red, · dim, the verify command's output tail grey."""
    in_output = False
    for ln in text.splitlines() or ["(no checks ran yet)"]:
        if ln.startswith("--- verify command output"):
            in_output = True
            imgui.text_colored(DIM, ln)
            continue
        if in_output:
            imgui.text_colored(GREY, ln)
        elif ln[:1] in ("✓", "✗", "·"):
            imgui.push_style_color(imgui.Col_.text, {"✓": GREEN, "✗": RED, "·": DIM}[ln[:1]])
            imgui.text_wrapped(ln)
            imgui.pop_style_color()
        else:
            imgui.text_wrapped(ln)
