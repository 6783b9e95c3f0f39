"""The ending rules of providers/endings.py through AgentSession, for ANY provider: here a
FunctionProvider that reports endings as another vendor would (the Gemini wire is covered in
test_endings.py)."""
from __future__ import annotations

import pytest

from ai_client import (AgentSession, CommsLog, EndingRules, Finish, FunctionProvider,
                       ModelResponse, ProviderError, RoundLimit, ToolCall, ToolOutcome)
from models import Price, Usage


def _session(answers, *, tools=True, **kw):
    seen = []
    it = iter(answers)

    def fn(req):
        seen.append(req)
        a = next(it)
        if isinstance(a, Exception):
            raise a
        return a
    ran = []
    s = AgentSession(FunctionProvider(fn), tier="Tier 3" if tools else "Tier 4", model="m",
                     stream_id="s", system="sys", comms=CommsLog(None), price=Price(),
                     tools=[object()] if tools else (),
                     tool_handler=(lambda c: ran.append(c.name) or ToolOutcome({"ok": True},
                                                                               c.args))
                     if tools else None, **kw)
    return s, seen, ran


def cut(text="partial"):
    return ProviderError(f"cut after {len(text)} characters", finish="cut", streamed=True,
                         usage=Usage(input_tokens=10, total_tokens=10, requests=1))


def test_an_unknown_finish_reason_is_never_a_final_answer():
    s, _, _ = _session([ModelResponse("looks done", finish_reason="LANGUAGE")])
    with pytest.raises(ProviderError, match="stopped for reason LANGUAGE") as ei:
        s.send("go")
    assert ei.value.finish == Finish.OTHER and not s.ended_normally


def test_max_tokens_with_whole_tool_calls_runs_them_and_goes_on():
    s, seen, ran = _session([
        ModelResponse("writing", tool_calls=[ToolCall("1", "write_file", {})],
                      finish_reason="length"),         # another vendor's word for MAX_TOKENS
        ModelResponse("done")])
    assert s.send("go") == "done" and ran == ["write_file"] and s.last_finish == Finish.STOP
    assert len(seen) == 2


def test_continuations_are_bounded_by_the_rounds():
    s, _, _ = _session([ModelResponse("more and", finish_reason="MAX_TOKENS")] * 3,
                       max_rounds=3)
    with pytest.raises(RoundLimit):
        s.send("go")
    assert s.last_finish == Finish.MAX_TOKENS and not s.ended_normally


def test_cut_retries_follow_the_rules_and_every_request_passes_the_budget_gate():
    gate = []
    s, seen, _ = _session([cut(), cut(), ModelResponse("whole")],
                          before_request=lambda sess: gate.append(sess.rounds))
    assert s.send("go") == "whole" and len(seen) == 3 and len(gate) == 3
    s2, seen2, _ = _session([cut(), ModelResponse("never")],
                            endings=EndingRules(max_cut_retries=0))
    with pytest.raises(ProviderError, match=r"\(cut once; not asked again\)$"):
        s2.send("go")
    assert len(seen2) == 1
    # both cut calls of the first session are booked as failed requests, with their usage
    assert s.requests_failed == 2 and s.usage.requests == 3 and s.usage.input_tokens >= 20


def test_a_failed_request_is_logged_with_its_ending_and_an_error_flag():
    s, _, _ = _session([cut("half"), ModelResponse("whole")])
    s.send("go")
    [err] = [e for e in s.comms.entries() if e["kind"] == "error"]
    assert err["data"]["failed"] is True and err["data"]["finish"] == "cut"
    assert err["usage"]["requests"] == 1


def test_a_non_worker_answer_cut_by_max_tokens_names_it():
    s, _, _ = _session([ModelResponse("Diagnosis: the", finish_reason="MAX_TOKENS")],
                       tools=False)
    with pytest.raises(ProviderError, match=r"Tier 4's answer was cut off by the output token "
                                            r"limit \(finish reason MAX_TOKENS\)"):
        s.send("why did it fail?")
