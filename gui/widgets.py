"""Small widgets shared by panels and dialogs: a coloured status, a progress bar, a help marker,
a panel's last error, the monospace font, a coloured diff, a sized modal, a filter combo.

GUI thread only. State: none (what they show comes in as arguments).
"""
from __future__ import annotations

from collections.abc import Callable

from imgui_bundle import ImVec2, ImVec4, imgui
from imgui_bundle import icons_fontawesome_4 as fa

from gui.state import AppState
from gui.theme import AMBER, BLUE, GREEN, GREY, RED, STATUS_COLOURS, STATUS_ICONS, em
from models import ApprovalRequest


def status_text(status: str) -> None:
    colour = STATUS_COLOURS.get(status, GREY)
    imgui.text_colored(colour, f"{STATUS_ICONS.get(status, '')} {status.replace('_', ' ')}")


def waiting_for_you(app: AppState, key: str, requests: list[ApprovalRequest]) -> bool:
    """What a ticket, track or stream held up by the person shows instead of "in progress" or
    "streaming" (issue 20, defect 10): an amber "waiting for you" that opens the approval
    dialog. False (nothing drawn) when nothing waits."""
    if not requests:
        return False
    imgui.push_style_color(imgui.Col_.text, AMBER)
    clicked = imgui.small_button(f"{fa.ICON_FA_BELL} waiting for you###waiting-{key}")
    imgui.pop_style_color()
    imgui.set_item_tooltip("\n".join(r.title for r in requests) + "\n\nClick to answer")
    if clicked:
        app.approvals.deferred = False
        app.modal.request("approval")
    return True


def long_text(text: str, key: str, colour: ImVec4 | None = None, max_lines: int = 3,
              more: str = "") -> bool:
    """Text that may not fit: wrapped to the space there is, at most `max_lines` lines (then cut
    with "…"), and the whole text as a tooltip (issue 20, defect 13: track names, ticket
    descriptions and a Tier 4 diagnosis were cut mid-sentence with nothing to read the rest).
    The text is covered by an invisible item `##key` that carries the tooltip; `more` is shown
    only there, under the text. True when cut."""
    full = " ".join(text.split()) if "\n" not in text else text.strip()
    width = max(imgui.get_content_region_avail().x, em(4).x)
    line_h = imgui.get_text_line_height()
    height = imgui.calc_text_size(full, wrap_width=width).y
    shown, cut = full, height > max_lines * line_h + 1
    if cut:
        keep = max(int(len(full) * (max_lines * line_h) / height) - 2, 1)
        shown = full[:keep].rstrip() + "…"
        while (len(shown) > 2
               and imgui.calc_text_size(shown, wrap_width=width).y > max_lines * line_h + 1):
            shown = shown[:-2].rstrip() + "…"
    start = imgui.get_cursor_screen_pos()
    imgui.push_text_wrap_pos(imgui.get_cursor_pos_x() + width)
    if colour is not None:
        imgui.text_colored(colour, shown)
    else:
        imgui.text_unformatted(shown)
    imgui.pop_text_wrap_pos()
    size = imgui.get_item_rect_size()
    imgui.set_cursor_screen_pos(start)
    imgui.invisible_button(f"##{key}", ImVec2(max(size.x, 1.0), max(size.y, 1.0)))
    if (cut or more) and imgui.is_item_hovered(imgui.HoveredFlags_.delay_short):
        imgui.set_next_window_size_constraints(ImVec2(0, 0), ImVec2(em(48).x, em(0, 40).y))
        if imgui.begin_tooltip():
            imgui.push_text_wrap_pos(em(46).x)
            imgui.text_unformatted(full)
            if more:
                imgui.text_disabled(more)
            imgui.pop_text_wrap_pos()
            imgui.end_tooltip()
    return cut


def coloured_progress(fraction: float, colour: ImVec4, overlay: str, width: float = -1.0) -> None:
    imgui.push_style_color(imgui.Col_.plot_histogram, colour)
    imgui.progress_bar(max(0.0, min(1.0, fraction)), ImVec2(width, 0), overlay)
    imgui.pop_style_color()


def quick_ctrl_enter() -> bool:
    """Enter pressed in the very frame Ctrl was released: a quick Ctrl+Enter at a low frame rate
    (input trickling applies another key's release in the same frame), which a multi-line text
    box takes for a plain Enter and answers with a newline (issue 20, defect 8)."""
    return (imgui.is_key_pressed(imgui.Key.enter, False)
            and imgui.is_key_released(imgui.Key.mod_ctrl) and not imgui.get_io().key_ctrl)


def help_marker(text: str) -> None:
    imgui.same_line()
    imgui.text_disabled("(?)")
    imgui.set_item_tooltip(text)


def panel_error(app: AppState, panel: str) -> None:
    """The last error shown for this panel, with a dismiss button."""
    msg = app.panel_errors.get(panel)
    if not msg:
        return
    imgui.push_style_color(imgui.Col_.text, RED)
    imgui.text_wrapped(f"{fa.ICON_FA_TIMES_CIRCLE} {msg}")
    imgui.pop_style_color()
    imgui.push_id(f"dismiss-{panel}")
    if imgui.small_button("Dismiss"):
        app.dismiss_panel_error(panel)
    imgui.pop_id()
    imgui.separator()


def mono_push(app: AppState) -> bool:
    if app.mono_font is not None:
        imgui.push_font(app.mono_font, 0.0)
        return True
    return False


def mono_pop(pushed: bool) -> None:
    if pushed:
        imgui.pop_font()


def diff_view(app: AppState, text: str, height: float) -> None:
    """A unified diff (or any text) with + and - lines coloured, clipped to what is visible."""
    lines = text.splitlines() or ["(empty)"]
    imgui.begin_child("##diff", ImVec2(-1, height), imgui.ChildFlags_.borders,
                      imgui.WindowFlags_.horizontal_scrollbar)
    pushed = mono_push(app)
    clipper = imgui.ListClipper()
    clipper.begin(len(lines))
    while clipper.step():
        for i in range(clipper.display_start, clipper.display_end):
            ln = lines[i]
            if ln.startswith("+") and not ln.startswith("+++"):
                imgui.text_colored(GREEN, ln)
            elif ln.startswith("-") and not ln.startswith("---"):
                imgui.text_colored(RED, ln)
            elif ln.startswith("@@"):
                imgui.text_colored(BLUE, ln)
            else:
                imgui.text_unformatted(ln)
    mono_pop(pushed)
    imgui.end_child()


def begin_sized_modal(title: str, width_em: float, height_em: float, max_height: float,
                      on_close: Callable[[], None] | None = None) -> bool:
    """A resizable modal centred on first appearance, at most 90 % wide and `max_height` of
    the viewport high. True when open (call imgui.end_popup() then). With `on_close`, the title
    bar has a close button, and clicking it calls `on_close`."""
    vp = imgui.get_main_viewport()
    imgui.set_next_window_size(ImVec2(min(em(width_em).x, vp.work_size.x * 0.9),
                                      min(em(0, height_em).y, vp.work_size.y * max_height)),
                               imgui.Cond_.appearing)
    imgui.set_next_window_pos(vp.get_center(), imgui.Cond_.appearing, ImVec2(0.5, 0.5))
    opened, still_open = imgui.begin_popup_modal(title, True if on_close is not None else None)
    if on_close is not None and not still_open:    # the close button (ImGui closed it)
        on_close()
    return opened


def filter_combo(label: str, current: str, options: list[str], width_em: float) -> tuple[bool, str]:
    """A drop-down with its label on its left (ImGui puts it on the right, where a row of them
    read as each label naming the next one: issue 20, defect 15). Its id is `##label`."""
    changed = False
    imgui.align_text_to_frame_padding()
    imgui.text(label)
    imgui.same_line(0, imgui.get_style().item_inner_spacing.x)
    imgui.set_next_item_width(em(width_em).x)
    if imgui.begin_combo(f"##{label}", current):
        for o in ["All", *options]:
            if imgui.selectable(o, o == current)[0] and o != current:
                current, changed = o, True
        imgui.end_combo()
    return changed, current

