"""The two approvals of issues 17 and 18, drawn inside the approval dialog:

- `merge_view`: a finished track's branch about to be merged into the person's branch: which
  branch goes where, a table of its tickets (commit, status, cost) and the combined diff with
  its files, using the dialog's height. Approve merges; Reject keeps the branch (for a pull
  request, say).
- `repair_view`: a repair attempt's spawn (attempt 2, 3, ...): the failed check's report and
  Tier 4's diagnosis, which the person may edit before the fresh worker gets it; and the
  conflict-repair spawn (attempt 0), which says what conflicts.

GUI thread only. State: none of its own (the dialog's `ApprovalEdit` holds the edited fields,
`app.approvals.diff_pick` the file selected in the merge's diff).
"""
from __future__ import annotations

from collections.abc import Callable

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui.diffs import checks_report, files_and_diff, parsed
from gui.records import ApprovalEdit
from gui.state import AppState
from gui.theme import AMBER, BLUE, DIM, GREEN, em, fmt_cost, short
from gui.widgets import status_text
from models import MergePayload, SpawnPayload

MERGE_WIDTH_EM = 96        # the merge dialog is wider: diffs are wide


def merge_view(app: AppState, p: MergePayload, max_height: float) -> None:
    """Branch → into, the tickets, the combined diff filling the dialog down to its buttons."""
    imgui.text_colored(GREEN, f"{fa.ICON_FA_CODE_BRANCH} {p.branch}")
    imgui.same_line()
    imgui.text("→")
    imgui.same_line()
    imgui.text_colored(BLUE, p.into)
    imgui.same_line()
    total = sum(float(k.get("cost_usd") or 0.0) for k in p.tickets)
    imgui.text_disabled(f"· {len(p.tickets)} ticket{'s' if len(p.tickets) != 1 else ''}, "
                        f"{fmt_cost(total)} in all")
    flags = (imgui.TableFlags_.row_bg | imgui.TableFlags_.borders_inner_v
             | imgui.TableFlags_.scroll_y | imgui.TableFlags_.sizing_fixed_fit)
    rows = min(len(p.tickets), 6) + 1.4
    if imgui.begin_table("merge-tickets", 5, flags, ImVec2(-1, em(0, rows * 1.25).y)):
        imgui.table_setup_scroll_freeze(0, 1)
        imgui.table_setup_column("Ticket")
        imgui.table_setup_column("Title", imgui.TableColumnFlags_.width_stretch)
        imgui.table_setup_column("Status")
        imgui.table_setup_column("Commit")
        imgui.table_setup_column("Cost")
        imgui.table_headers_row()
        for k in p.tickets:
            imgui.table_next_row()
            imgui.table_next_column()
            imgui.text(str(k.get("id", "")))
            imgui.table_next_column()
            imgui.text_unformatted(short(str(k.get("title", "")), 90))
            imgui.table_next_column()
            status_text(str(k.get("status", "")))
            imgui.table_next_column()
            commit = str(k.get("commit") or "")
            if commit:
                imgui.text(commit)
            else:
                imgui.text_disabled("(no change)")
            imgui.table_next_column()
            imgui.text(fmt_cost(float(k.get("cost_usd") or 0.0)))
        imgui.end_table()
    _lines, starts, _stats = parsed(p.diff, app.approvals.diff_pick)
    imgui.text(f"The combined diff: {len(starts)} file{'s' if len(starts) != 1 else ''}")
    imgui.same_line()
    imgui.text_disabled("(click a file to jump to it)")
    # the diff takes the dialog's height, down to the buttons and the reason under it
    reserve = em(0, 6.5).y
    h = max(em(0, 8).y, max_height - imgui.get_cursor_pos_y() - reserve)
    files_and_diff(app, "merge-diff", list(starts), p.diff, h, app.approvals.diff_pick)
    imgui.text_disabled(f"Approve merges {p.branch} into {p.into} (your uncommitted changes are "
                        f"never touched; a merge that would overwrite them is refused). Reject "
                        f"keeps {p.branch} as it is, for a pull request.")


def repair_view(edit: ApprovalEdit, multiline: Callable[[str, str, float], None]) -> None:
    """A repair spawn's failed check and editable diagnosis; a conflict repair's heading.
    `multiline(label, field, lines)` is the dialog's own editor for a text field."""
    p = edit.request.payload
    if not isinstance(p, SpawnPayload):
        return
    if p.attempt == 0:
        imgui.text_colored(AMBER, f"{fa.ICON_FA_EXCLAMATION_TRIANGLE} A merge conflict: a "
                                  f"fresh worker may resolve it, keeping both sides")
        imgui.text_disabled("Both sides are in the Context below; the worker must leave no "
                            "conflict markers. Reject keeps the change on its own branch "
                            "(nothing is dropped) for you to resolve.")
        return
    if p.attempt <= 1:
        return
    imgui.text_colored(AMBER, f"{fa.ICON_FA_WRENCH} Repair: attempt {p.attempt}. "
                              f"The last attempt failed its checks.")
    imgui.text("The failed check")
    imgui.begin_child("failed-check", ImVec2(-1, em(0, 6).y), imgui.ChildFlags_.borders)
    checks_report(p.check or "(no report)")
    imgui.end_child()
    imgui.text("Tier 4's diagnosis")
    imgui.same_line()
    imgui.text_disabled("(edit it: the repair worker gets it as its brief)")
    multiline("##Diagnosis", "diagnosis", 4)
    if edit.fields.get("diagnosis", "") != edit.original.get("diagnosis", ""):
        imgui.text_colored(BLUE, "Your edit of the diagnosis goes to the worker.")
    elif not p.diagnosis.strip():
        imgui.text_colored(DIM, "Tier 4 gave no diagnosis; the worker gets the check's report.")
