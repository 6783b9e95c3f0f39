"""The proposal dialog: Tier 1's proposed tracks, editable, accepted or cancelled.

GUI thread only. State: `app.modal.proposal` and `app.modal.proposal_error`.
"""
from __future__ import annotations

from imgui_bundle import ImVec2, imgui
from imgui_bundle import icons_fontawesome_4 as fa
from pydantic import ValidationError

from gui.records import ProposalRow
from gui.state import AppState, ModalState
from gui.theme import AMBER, RED, WRAP, describe_error, em, short, validation_messages
from gui.widgets import begin_sized_modal
from models import Track, TrackProposal


def proposal_modal(app: AppState) -> None:
    rows = app.modal.proposal
    if not begin_sized_modal("Proposed tracks", 60, 40, 0.85):
        return
    if rows is None:
        imgui.close_current_popup()
        app.modal.current = None
        imgui.end_popup()
        return
    imgui.text_wrapped(f"{proposal_heading(app.modal)} for: {short(app.modal.proposal_epic, 200)}")
    imgui.text_disabled("Edit titles, goals and acceptance criteria (one per line); remove what you "
                        "do not want, add what is missing.")
    footer = imgui.get_frame_height_with_spacing() * (2.2 if app.modal.proposal_error else 1.3)
    imgui.begin_child("body", ImVec2(0, -footer))
    remove: int | None = None
    for i, row in enumerate(rows):
        imgui.push_id(f"track{i}")
        imgui.separator_text(f"Track {i + 1}")
        imgui.set_next_item_width(-em(9).x)
        _c, row.title = imgui.input_text("Title", row.title)
        _c, row.goal = imgui.input_text_multiline("Goal", row.goal, ImVec2(-em(9).x, em(0, 3.2).y), WRAP)
        _c, row.criteria = imgui.input_text_multiline("Acceptance criteria", row.criteria,
                                                      ImVec2(-em(9).x, em(0, 4.2).y), WRAP)
        if imgui.button(f"{fa.ICON_FA_TRASH} Remove track###Remove track"):
            remove = i
        imgui.pop_id()
    if remove is not None:
        app.modal.proposal_removed.append((remove, rows.pop(remove)))
    if app.modal.proposal_scroll_to_end:
        imgui.set_scroll_here_y(1.0)
        app.modal.proposal_scroll_to_end = False
    imgui.end_child()
    if app.modal.proposal_error:
        imgui.push_style_color(imgui.Col_.text, RED)
        imgui.text_wrapped(app.modal.proposal_error)
        imgui.pop_style_color()
    accepting = app.busy("Accept tracks")
    imgui.begin_disabled(not rows or accepting)
    if imgui.button(f"{fa.ICON_FA_CHECK} Accept###Accept", em(8, 0)):
        accept_proposal(app)
    imgui.end_disabled()
    imgui.same_line()
    if imgui.button("Cancel", em(8, 0)):
        app.modal.proposal = None
        app.modal.current = None
        imgui.close_current_popup()
    imgui.same_line(0, em(2).x)
    if imgui.button(f"{fa.ICON_FA_PLUS} Add track###Add track"):
        rows.append(ProposalRow("", "", ""))
        app.modal.proposal_scroll_to_end = True
    removed = app.modal.proposal_removed
    if removed:
        imgui.same_line()
        last = short(removed[-1][1].title, 60) or "(untitled)"
        if imgui.button(f"{fa.ICON_FA_UNDO} Undo remove###Undo remove"):
            i, row = removed.pop()
            rows.insert(min(i, len(rows)), row)
        imgui.set_item_tooltip(f"Bring back \"{last}\"")
    if not rows:
        imgui.same_line()
        imgui.text_colored(AMBER, "No track left: add one, undo, Cancel, or plan the epic again.")
    if app.modal.proposal is None or (app.modal.current != "proposal"):
        imgui.close_current_popup()
    imgui.end_popup()


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def proposal_heading(modal: ModalState) -> str:
    """The tracks as they are now, against what Tier 1 proposed (issue 20, defect 18)."""
    rows = modal.proposal or []
    proposed, removed = modal.proposal_count, len(modal.proposal_removed)
    added = len(rows) - (proposed - removed)
    head = f"Tier 1 proposed {plural(proposed, 'track')}"
    if removed == 0 and added == 0:
        return head
    changes = ", ".join(x for x in (f"{removed} removed" if removed else "",
                                    f"{added} added" if added else "") if x)
    return f"{head}; you are accepting {len(rows)} ({changes})"


def accept_proposal(app: AppState) -> None:
    rows = app.modal.proposal or []
    props: list[TrackProposal] = []
    problems: list[str] = []
    for i, r in enumerate(rows, 1):
        crit = [c.strip() for c in r.criteria.splitlines() if c.strip()]
        try:
            props.append(TrackProposal(title=r.title.strip(), goal=r.goal.strip(),
                                       acceptance_criteria=crit))
        except ValidationError as e:
            problems += [f"track {i}: {m}" for m in validation_messages(e)]
    if problems:
        app.modal.proposal_error = "Not accepted: " + "; ".join(problems)
        return

    def done(tracks: list[Track]) -> None:
        app.tickets.dirty = True
        if tracks:
            app.tickets.selected_track = tracks[0].id
        app.notify("info", f"accepted {len(tracks)} track(s)")

    def failed(e: BaseException) -> None:
        app.modal.proposal_error = describe_error(e)

    try:
        fut = app.engine.accept_tracks(props)
    except Exception as e:  # noqa: BLE001
        app.modal.proposal_error = describe_error(e)
        return
    app.track_op("Accept tracks", fut, "Tracks", done, failed)
    app.modal.proposal = None
    app.modal.current = None

