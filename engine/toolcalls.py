"""Tool calls: a worker's call judged by the approval policy and the shell rules, asked when
it must be, run in the workspace with the ticket's cancel event, and reported as it ran.

Threads: the worker's executor thread (the session's tool handler). State owned: none; the
files each worker wrote go to `_written` under `_written_lock`.

A shell command is judged by `toolbox.rules.evaluate`: deny -> a tool error to the model that
names the rule, nobody is asked; ask -> a ShellPayload with the rule, the offending argument
and the time limit it will run under; allow -> it runs. An edited time limit is honoured but
never above the workspace's setting.
"""
from __future__ import annotations

from typing import Any

from ai_client import Cancelled, ToolCall, ToolOutcome
from engine.errors import EngineError, describe, short_json
from events import ErrorEvent, StreamChunk
from models import ApprovalRequest, ShellPayload, ToolPayload, stream_tier4
from toolbox.rules import evaluate
from tools import ToolError, clamp_timeout, diff_preview, tool_spec


class ToolCalls:
    """Mixin of ConductorEngine: the tool handler of every Tier 3 session."""

    def _handle_tool(self, session: Any, call: ToolCall) -> ToolOutcome:
        args = dict(call.args) if isinstance(call.args, dict) else {}
        try:
            spec = tool_spec(call.name)
        except KeyError as e:
            return ToolOutcome({"ok": False, "error": str(e).strip("'\"")}, args)
        policy = self.settings.approvals
        ws = self._ws_for(session.ticket_id)     # the ticket's worktree, or the shared directory
        payload: ShellPayload | ToolPayload
        if spec.kind == "shell":
            command = args.get("command")
            if not isinstance(command, str) or not command.strip():
                return ToolOutcome({"ok": False, "error": "run_shell: command must be a "
                                                          "non-empty string"}, args)
            cwd = args.get("cwd", ".")
            cwd = cwd if isinstance(cwd, str) and cwd else "."
            m = evaluate(command, policy, workspace_root=ws.root, cwd=cwd)
            if m.decision == "deny":
                return ToolOutcome({"ok": False, "denied": True, "rule": m.rule,
                                    "error": f"the approval rules refuse this command: {m.rule}"
                                             + (f" (argument {m.argument!r})" if m.argument
                                                else "")}, args)
            try:
                timeout_s = clamp_timeout(args.get("timeout"), ws.shell_timeout_s)[0]
            except ToolError as e:
                return ToolOutcome({"ok": False, "error": str(e)}, args)
            ask = m.decision == "ask"
            payload = ShellPayload(command=command, cwd=cwd, timeout_s=timeout_s, rule=m.rule,
                                   argument=m.argument)
            title = f"{session.ticket_id} wants to run a shell command"
        else:
            ask = (policy.read_tools if spec.kind == "read" else policy.write_tools) == "ask"
            payload = ToolPayload(tool=call.name, args=args,
                                  preview=(diff_preview(ws, call.name, args)
                                           if ask and not self.auto_approve else ""))
            title = f"{session.ticket_id or session.stream_id} wants to call {call.name}"
        edited = False
        if ask and not self.auto_approve:
            decision = self.approvals.ask_from_thread(ApprovalRequest(
                title=title, stream_id=session.stream_id, track_id=session.track_id,
                ticket_id=session.ticket_id, payload=payload))
            if not decision.approved:
                return ToolOutcome({"ok": False, "rejected": True,
                                    "error": "the user rejected this call" +
                                             (f": {decision.reason}" if decision.reason else "")},
                                   args)
            final = decision.payload
            if final is not None:
                new_args = self._edited_args(args, payload, final)
                edited = new_args != args
                args = new_args
        if edited:       # the stream shows the call that runs, not the one the model asked for
            self._emitter()(StreamChunk(
                stream_id=session.stream_id,
                text=self._scrub(f"  ✎ edited before it ran, by you; it ran as:\n"
                                 f"→ {call_line(call.name, args)}\n")))
        res = ws.execute(call.name, args, cancel=session.cancel)
        if spec.kind == "write" and res.ok and isinstance(args.get("path"), str):
            with self._written_lock:
                self._written.setdefault(session.ticket_id, set()).add(args["path"])
        result = res.to_dict()
        if edited:
            result["note"] = "the user edited the arguments before running; these ran: " + \
                short_json(args)
        if call.name == "run_shell" and not res.ok and res.exit_code is not None \
                and not (session.cancel is not None and session.cancel.is_set()):
            try:
                result["qa_diagnosis"] = self.run_qa(
                    session.track_id, session.ticket_id,
                    f"`{args.get('command', '')}` exited with code {res.exit_code}",
                    res.output or res.error)
            except Cancelled:
                raise
            except Exception as e:   # QA failing must not fail the worker: reported on Tier 4
                self._emitter()(ErrorEvent(message=self._scrub(f"Tier 4 could not diagnose: "
                                                               f"{describe(e)}"),
                                           stream_id=stream_tier4(session.ticket_id),
                                           track_id=session.track_id,
                                           ticket_id=session.ticket_id))
        return ToolOutcome(result, args)

    def _edited_args(self, args: dict[str, Any], asked: ShellPayload | ToolPayload,
                     final: Any) -> dict[str, Any]:
        """The arguments that run after the person's answer."""
        if isinstance(final, ShellPayload):
            new_args = dict(args)
            new_args["command"] = final.command
            if final.cwd != asked.cwd or "cwd" in args:   # type: ignore[union-attr]
                new_args["cwd"] = final.cwd
            if final.timeout_s is not None and final.timeout_s != asked.timeout_s:  # type: ignore[union-attr]
                # honoured, never above the setting
                new_args["timeout"] = min(float(final.timeout_s), self.ws.shell_timeout_s)
            return new_args
        if isinstance(final, ToolPayload):
            return dict(final.args)
        raise EngineError(f"a {final.kind} payload cannot answer a tool call")


def call_line(name: str, args: dict[str, Any], limit: int = 300) -> str:
    """A tool call as the stream shows one, `name(key='value', ...)`: a command whole up to
    `limit`, other long strings cut with their length, line breaks as ⏎."""
    parts = []
    for k, v in args.items():
        if isinstance(v, str):
            one = v.replace("\n", "⏎")
            keep = limit if k == "command" else 60
            parts.append(f"{k}={one if len(one) <= keep else one[:keep] + f'… ({len(v)} chars)'!r}")
        else:
            parts.append(f"{k}={short_json(v, 60)}")
    return f"{name}({', '.join(parts)})"
