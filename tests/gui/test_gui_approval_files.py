"""Approvals a person can read (issue 20): a write_file approval showed the file's content as
one escaped JSON line (\\n, \\") with a six-line diff box. Now the path is a field, the content
is plain text in a multi-line editor, and the unified diff under it takes the dialog's height;
an edit made there reaches the engine as text."""
from __future__ import annotations

import threading

import pytest

from conftest import fast_settings
from gui_support import run_app_test, wait_until

import gui_2
from imgui_bundle import imgui
from models import ApprovalRequest, ToolPayload

pytestmark = pytest.mark.timeout(300)

CONTENT = 'def hello(name):\n    """Say "hello"."""\n    return f"hello, {name}"\n' + "".join(
    f"# line {i}\n" for i in range(60))


def test_a_file_write_is_edited_as_text_with_a_tall_diff(workspace):
    from multi_agent_conductor import ConductorEngine
    eng = ConductorEngine(workspace, fast_settings()).start()
    app = gui_2.AppState(eng)
    payload = ToolPayload(tool="write_file", args={"path": "src/hello.py", "content": CONTENT},
                          preview=eng.diff_preview("write_file", {"path": "src/hello.py", "content": CONTENT}))
    seen, result = {}, {}

    def ask():          # a worker's thread asking, as the engine's tool loop does
        req = ApprovalRequest(title="T-001 wants to call write_file", ticket_id="T-001", payload=payload)
        result["decision"] = eng.approvals.ask_from_thread(req)
    threading.Thread(target=ask, daemon=True).start()

    def t(ctx):
        wait_until(ctx, lambda: app.modal.current == "approval" and app.approvals.edit, 10, "the approval")
        ctx.yield_(3)
        edit = app.approvals.edit
        seen["fields"] = dict(edit.fields)
        seen["has_args_json"] = ctx.item_exists("//Approval/##Arguments")
        dialog = ctx.get_window_by_ref("//Approval")
        content = ctx.item_info("//Approval/##Content")
        seen["dialog_h"] = dialog.size.y
        seen["viewport_h"] = imgui.get_main_viewport().work_size.y
        seen["content_h"] = content.rect_full.get_height()
        diff = ctx.window_info("//Approval/##diff")
        seen["diff_h"] = diff.window.size.y if diff.window is not None else 0
        ctx.item_click("//Approval/##Content")
        ctx.key_press(imgui.Key.mod_ctrl | imgui.Key.home)
        ctx.key_chars("# edited in the dialog\n")
        ctx.yield_(1)
        seen["edited"] = edit.fields["content"]
        ctx.item_click("//Approval/###Approve")
        wait_until(ctx, lambda: "decision" in result, 10, "the decision reaching the engine")

    try:
        run_app_test(app, t)
    finally:
        eng.close()
        app.close()
    assert seen["fields"] == {"path": "src/hello.py", "content": CONTENT}
    assert not seen["has_args_json"], "the content is still edited as a JSON line"
    assert seen["dialog_h"] >= 0.85 * seen["viewport_h"]
    assert seen["diff_h"] >= 0.35 * seen["dialog_h"], (seen["diff_h"], seen["dialog_h"])
    assert seen["content_h"] >= 0.25 * seen["dialog_h"]
    assert seen["edited"] == "# edited in the dialog\n" + CONTENT
    decision = result["decision"]
    assert decision.payload.args == {"path": "src/hello.py", "content": "# edited in the dialog\n" + CONTENT}
