"""The spawn dialog's context (issue 19): a worker's request as labelled sections with their
tokens, which the person may drop (a file, a skeleton, a document, the map), add to (a file of
the workspace, by path) and edit (any section's text; the ticket's text is the Prompt field).
What is approved is what the worker is sent: the engine renders exactly these sections.

GUI thread only (adding a file reads it on the background pool). State: the sections of the
approval being edited (`ApprovalEdit.sections`, `add_path`), which this module changes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imgui_bundle import ImVec2, imgui

import prompts
from gui.records import ApprovalEdit
from gui.state import AppState
from gui.theme import AMBER, GREY, describe_error, em, fmt_tokens
from models import ContextSection

DROPPABLE = frozenset({"file", "skeleton", "document", "map"})


def synced_sections(edit: ApprovalEdit) -> list[ContextSection]:
    """The working sections with the ticket section's text taken from the Prompt field (the
    field the person edits the ticket in)."""
    out = list(edit.sections)
    for i, s in enumerate(out):
        if s.kind == "ticket" and s.text != edit.fields.get("prompt", s.text):
            out[i] = s.with_text(edit.fields["prompt"])
    return out


def _set(edit: ApprovalEdit, sections: list[ContextSection]) -> None:
    edit.sections = sections
    ticket = next((s for s in sections if s.kind == "ticket"), None)
    if ticket is not None:
        edit.fields["prompt"] = ticket.text
    edit.error = ""


def drop_section(edit: ApprovalEdit, index: int) -> None:
    """Take one section out. A file's section goes with its line in the ticket's CONTEXT
    FILES list, so the worker is not told to read what it was not given."""
    secs = synced_sections(edit)
    s = secs[index]
    if s.kind not in DROPPABLE:
        edit.error = f"The {s.label.lower()} cannot be dropped: a worker needs it."
        return
    if s.path:
        _set(edit, prompts.without_file(secs, s.path))
    else:
        _set(edit, secs[:index] + secs[index + 1:])


def add_file(app: AppState, edit: ApprovalEdit) -> None:
    """Read the file at `edit.add_path` (off the GUI thread) and add it before the ticket: in
    full when small, as its definitions when large. A bad path is an inline error."""
    path = edit.add_path.strip()
    if not path:
        edit.error = "Type the path of a workspace file to add (e.g. src/app.py)."
        return
    engine = app.engine

    def work() -> tuple[str, bool]:
        return engine.context_file(path)

    def done(result: tuple[str, bool]) -> None:
        if app.approvals.edit is not edit:      # answered meanwhile: nothing to add to
            return
        text, skeleton = result
        _set(edit, prompts.with_file(synced_sections(edit), path, text, skeleton=skeleton))
        edit.add_path = ""

    def failed(e: BaseException) -> None:        # GUI thread, like done
        edit.error = f"Could not add {path}: {describe_error(e)}"

    app.track_op("Add a file to the context", app.bg.submit(work), "Approvals", done, failed)


def spawn_changes(edit: ApprovalEdit) -> dict[str, Any]:
    """The edits of a spawn as a partial payload (prompt, context, model, sections)."""
    f = edit.fields
    changes: dict[str, Any] = {"prompt": f["prompt"], "context": f["context"], "model": f["model"]}
    if edit.sections_original:
        changes["sections"] = synced_sections(edit)
    return changes


def context_sections_editor(app: AppState, edit: ApprovalEdit,
                            multiline: Callable[[str, str, float], None]) -> None:
    """The sections, each with its tokens; the ticket's text is the Prompt field below them."""
    secs = synced_sections(edit)
    total = sum(s.tokens for s in secs)
    shared = prompts.shared_prefix_tokens(secs)
    imgui.text(f"Context: {len(secs)} sections, {fmt_tokens(total)} tokens")
    imgui.same_line()
    imgui.text_disabled(f"(shared prefix {fmt_tokens(shared)}: cacheable)")
    drop: int | None = None
    imgui.begin_child("##sections", ImVec2(-1, em(0, 9).y), imgui.ChildFlags_.borders)
    flags = imgui.TableFlags_.row_bg | imgui.TableFlags_.sizing_fixed_fit
    if imgui.begin_table("##section-rows", 3, flags):
        imgui.table_setup_column("drop")
        imgui.table_setup_column("section", imgui.TableColumnFlags_.width_stretch)
        imgui.table_setup_column("tokens")
        for i, s in enumerate(secs):
            if s.kind == "ticket":
                continue
            imgui.push_id(s.path or s.label)
            imgui.table_next_row()
            imgui.table_next_column()
            if s.kind in DROPPABLE:
                if imgui.small_button("Drop###Drop"):
                    drop = i
                imgui.set_item_tooltip("Leave this out of the worker's context")
            imgui.table_next_column()
            open_ = imgui.tree_node_ex(f"{s.label}###node", imgui.TreeNodeFlags_.span_avail_width)
            if open_:
                if s.kind == "system":
                    imgui.text_wrapped(s.text)
                    imgui.text_disabled("(the system prompt is shown, not edited)")
                else:
                    key = f"section:{i}"
                    edit.fields[key] = s.text
                    multiline("##text", key, 8)
                    if edit.fields[key] != s.text:
                        edit.sections[i] = s.with_text(edit.fields[key])
                    del edit.fields[key]    # the section holds the text, not the fields
                imgui.tree_pop()
            imgui.table_next_column()
            imgui.text_colored(AMBER if s.tokens > 2000 else GREY,
                               f"{fmt_tokens(s.tokens)} tok" + (" · shared" if s.shared else ""))
            imgui.pop_id()
        imgui.end_table()
    imgui.end_child()
    if drop is not None:
        drop_section(edit, drop)
    imgui.set_next_item_width(-em(9).x)
    entered, edit.add_path = imgui.input_text_with_hint(
        "##add-path", "a workspace file to add (path)", edit.add_path,
        imgui.InputTextFlags_.enter_returns_true)
    imgui.same_line()
    if imgui.button("Add file###Add file", em(8, 0)) or entered:
        add_file(app, edit)
