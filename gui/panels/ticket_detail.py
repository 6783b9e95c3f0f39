"""The selected ticket's details, under the Tickets window's run table: its branch and how its
commit reached the track branch (or the conflict that stopped it), its attempts ("attempt 2
of 3"), the last checks' report, Tier 4's diagnosis, and its change: the files and the
coloured unified diff, and what each attempt cost, fetched from the engine
(`engine_reads.ticket_reads`: git and the comms log) on the GUI's background pool, never on
the frame.

GUI thread only. State: `app.detail` (the ticket shown, its diff as last fetched and for
which key, the selected file).
"""
from __future__ import annotations

from typing import Any

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui import engine_reads
from gui.diffs import checks_report, files_and_diff
from gui.state import AppState
from gui.theme import AMBER, BLUE, DIM, GREEN, RED, describe_error, em, fmt_cost
from gui.widgets import status_text
from models import Ticket, Track

DETAIL_TABS = ("Changes", "Checks", "Diagnosis")


def select_ticket(app: AppState, ticket: Ticket) -> None:
    """Show `ticket` in the details pane (a failed one opens on its checks)."""
    d = app.detail
    if d.ticket_id != ticket.id:
        d.ticket_id = ticket.id
        d.diff, d.diff_key, d.diff_error = None, (), ""
        d.pick.selected, d.pick.jump_to = "", None
        d.tab_request = "Checks" if ticket.status == "failed" and ticket.checks else "Changes"


def diff_key(k: Ticket) -> tuple[str, ...]:
    """What the ticket's diff depends on: fetched again when one of these changes."""
    return (k.id, k.commit_sha, k.branch, k.status, k.merge, str(k.attempts))


def fetch_diff(app: AppState, k: Ticket, force: bool = False) -> None:
    """Ask the engine for the ticket's diff on the background pool (git runs there)."""
    d = app.detail
    key = diff_key(k)
    if (key == d.diff_key and not force) or app.busy(f"Diff of {k.id}"):
        return
    d.diff_key = key
    d.diff_error = ""
    fut = app.bg.submit(engine_reads.ticket_reads, app.engine, k.id)

    def done(result: dict[str, Any]) -> None:
        if app.detail.ticket_id == k.id:
            app.detail.diff = result

    def failed(e: BaseException) -> None:
        if app.detail.ticket_id == k.id:
            app.detail.diff_error = describe_error(e)
            app.detail.diff = None
    app.track_op(f"Diff of {k.id}", fut, "Tickets", done, failed)


def attempt_costs_text(read: dict[str, Any] | None) -> str:
    """"attempt 1 $0.0005 · attempt 2 $0.0007 · Tier 4 $0.0002" from a ticket read."""
    if not read:
        return ""
    costs = read.get("attempt_costs") or {}
    parts = [(f"attempt {n}" if n else "conflict repair") + f" {fmt_cost(c)}"
             for n, c in sorted(costs.items())]
    if read.get("qa_cost"):
        parts.append(f"Tier 4 {fmt_cost(read['qa_cost'])}")
    return " · ".join(parts)


def attempts_text(app: AppState, k: Ticket) -> str:
    most = 1 + app.engine.settings.max_repairs
    if k.attempts <= 0:
        return "not run yet" if k.status in ("todo", "blocked") else "no attempt recorded"
    return f"attempt {k.attempts} of {most}"


def merge_line(t: Track, k: Ticket) -> None:
    """Where the ticket's work is: its branch, how it reached the track branch, or why not."""
    if k.branch:
        imgui.text_disabled("Branch")
        imgui.same_line()
        imgui.text(k.branch)
        imgui.same_line()
    if k.merge.startswith("conflict"):
        imgui.text_colored(RED, f"{fa.ICON_FA_EXCLAMATION_TRIANGLE} {k.merge}")
    elif k.merge:
        imgui.text_colored(GREEN, f"{fa.ICON_FA_CODE_BRANCH} merged into {t.branch or 'the track branch'}"
                                  f" ({k.merge})")
    elif k.commit_sha and t.branch:
        imgui.text_colored(GREEN, f"{fa.ICON_FA_CODE_BRANCH} on {t.branch}")
    elif k.commit_sha:
        imgui.text_colored(GREEN, "committed in the workspace")
    elif t.branch and k.status == "completed":
        imgui.text_disabled("no change to merge")
    else:
        imgui.text_disabled("not merged" if t.branch else "no branch (tickets share the directory)")
    if k.commit_sha:
        imgui.same_line()
        imgui.text_disabled("commit")
        imgui.same_line()
        imgui.text(k.commit_sha[:12])
    if t.merged_into:
        imgui.same_line()
        imgui.text_colored(BLUE, f"· track merged into {t.merged_into}")
    if k.merge.startswith("conflict") and k.status != "completed":
        where = f"is kept on {k.branch}" if k.branch else "was kept on its own branch"
        imgui.text_disabled(f"Nothing was dropped: its change {where}, and "
                            f"{t.branch or 'the track branch'} keeps the other side. Resolve "
                            f"it in git yourself, or Retry for a fresh worker.")


def detail_pane(app: AppState, t: Track) -> None:
    """The pane itself, filling what is left of the window."""
    d = app.detail
    chosen = app.tickets.selected_ticket        # one selection: the list's and the graph's
    if chosen and chosen != d.ticket_id:
        picked = next((x for x in t.tickets if x.id == chosen), None)
        if picked is not None:
            select_ticket(app, picked)
    k = next((x for x in t.tickets if x.id == d.ticket_id), None)
    if k is None:
        return
    imgui.push_id("ticket-detail")
    imgui.text(k.id)
    imgui.same_line()
    status_text(k.status)
    imgui.same_line()
    colour = AMBER if k.attempts > 1 else DIM
    imgui.text_colored(colour, attempts_text(app, k))
    u = app.usage.ticket.get(k.id)
    if u is not None:
        imgui.same_line()
        imgui.text_disabled(f"· {fmt_cost(u.cost_usd)} in all")
        imgui.set_item_tooltip("every attempt of its workers and Tier 4's diagnoses")
    imgui.same_line()
    if imgui.small_button(f"{fa.ICON_FA_TIMES} Close###Close details"):
        d.ticket_id = None
    imgui.set_item_tooltip("Close the details")
    per = attempt_costs_text(d.diff)
    if per and (k.attempts > 1 or "conflict" in per):
        imgui.text_disabled(f"Cost per attempt: {per}")
    merge_line(t, k)
    if k.blocked_reason and k.status in ("failed", "blocked", "skipped", "cancelled"):
        imgui.push_style_color(imgui.Col_.text, RED if k.status in ("failed", "blocked") else DIM)
        imgui.text_wrapped(k.blocked_reason[-1500:])
        imgui.pop_style_color()
    if imgui.begin_tab_bar("ticket-detail-tabs"):
        for name in DETAIL_TABS:
            flags = imgui.TabItemFlags_.set_selected if d.tab_request == name else 0
            label = name
            if name == "Changes" and d.diff is not None:
                label = f"Changes ({len(d.diff.get('files') or [])})###Changes"
            elif name == "Checks" and k.checks:
                label = (f"Checks {'✗' if '✗' in k.checks else '✓'}###Checks")
            opened, _ = imgui.begin_tab_item(label, None, flags)
            if opened:
                if name == "Changes":
                    changes_tab(app, k)
                elif name == "Checks":
                    checks_tab(app, t, k)
                else:
                    diagnosis_tab(k)
                imgui.end_tab_item()
        d.tab_request = None
        imgui.end_tab_bar()
    imgui.pop_id()


def changes_tab(app: AppState, k: Ticket) -> None:
    d = app.detail
    fetch_diff(app, k)
    loading = app.busy(f"Diff of {k.id}")
    if imgui.small_button(f"{fa.ICON_FA_SYNC} Refresh###Refresh diff"):
        fetch_diff(app, k, force=True)
    imgui.same_line()
    if loading:
        imgui.text_colored(BLUE, "reading the diff from git…")
    elif d.diff_error:
        imgui.text_colored(RED, f"{fa.ICON_FA_TIMES_CIRCLE} Could not read the diff: {d.diff_error}")
    elif d.diff is not None:
        where = d.diff.get("commit") or ""
        imgui.text_disabled(f"commit {where[:12]}" if where else
                            "no commit yet: the ticket's work is committed when its checks pass")
    if d.diff is None:
        return
    files = list(d.diff.get("files") or [])
    text = str(d.diff.get("diff") or "")
    if not files and not text:
        imgui.text_disabled("(no changes)")
        return
    h = max(imgui.get_content_region_avail().y, em(0, 6).y)
    files_and_diff(app, "ticket-diff", files, text, h, d.pick)


def checks_tab(app: AppState, t: Track, k: Ticket) -> None:
    cmd = t.verify_command if t.verify_command is not None else app.engine.settings.verify_command
    imgui.text_disabled(f"verify command: {cmd}" if cmd.strip() else
                        "no verify command (set one in the Tracks window, Edit tab)")
    imgui.begin_child("checks", ImVec2(-1, -1), imgui.ChildFlags_.borders)
    if k.checks:
        checks_report(k.checks)
    else:
        imgui.text_disabled("No checks have run for this ticket yet: they run after each "
                            "attempt's final answer, before it may complete.")
    imgui.end_child()


def diagnosis_tab(k: Ticket) -> None:
    imgui.begin_child("diagnosis", ImVec2(-1, -1), imgui.ChildFlags_.borders)
    if k.diagnosis:
        imgui.text_disabled("The diagnosis of the last failed check (Tier 4's, as the person "
                            "left it):")
        imgui.text_wrapped(k.diagnosis)
    else:
        imgui.text_disabled("No diagnosis: Tier 4 runs when a check fails or a worker stops "
                            "with an error.")
    imgui.end_child()
