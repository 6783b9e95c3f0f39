"""How an answer ended, end to end below the engine: the REAL google-genai SDK against the fake
Gemini server (tests/fakes/fake_gemini.py), through GeminiProvider and AgentSession, for each
ending of issue 18. A worker here writes a real file through its tool handler, so "the work is
missing" is checked on disk: no ending may leave send() returning a final answer with the file
unwritten, and after every send() that returns, `session.last_finish is Finish.STOP`.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ai_client import (CONTINUE_PROMPT, AgentSession, CommsLog, Finish, GeminiProvider,
                       ProviderError, ToolOutcome, run_structured)
from models import EpicPlan, Price
from tests.fakes.fake_gemini import Calls, Fault, Json, Text
from tests.fakes.fake_gemini import Usage as SentUsage
from tools import TOOL_SPECS

KEY = "AIzaFAKE-endings-test-key-0123456789abc"
MODEL = "gemini-2.5-flash"
PLAN = {"tracks": [{"title": "Core", "goal": "Build it", "acceptance_criteria": ["it works"]}]}
REPAIR = "Fix it: {error}"


@pytest.fixture(scope="module")
def _provider(_server):
    p = GeminiProvider(api_key=KEY, base_url=_server.base_url, timeout_s=5.0, max_retries=2,
                       initial_delay_s=0.0, max_delay_s=0.01, sleep=lambda s: None)
    yield p
    p.close()


class Agent:
    """A session on the fake server, with a tool handler that really writes files, its stream
    and its comms log on disk."""

    def __init__(self, provider, root: Path, *, tier="Tier 3", schema=None, **kw):
        self.root = root
        self.chunks: list[str] = []
        self.comms = CommsLog(root / "comms.jsonl")
        tools = TOOL_SPECS if tier == "Tier 3" else ()
        self.session = AgentSession(
            provider, tier=tier, model=MODEL, stream_id=f"{tier} stream", system="be a worker",
            comms=self.comms, price=Price(input=1.0, output=2.0), ticket_id="T-001",
            tools=tools, tool_handler=self.handle if tools else None,
            emit=lambda ev: self.chunks.append(ev.text) if hasattr(ev, "text") else None,
            response_schema=schema, **kw)

    def handle(self, call):
        if call.name == "write_file":
            p = self.root / "ws" / call.args["path"]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(call.args["content"])
            return ToolOutcome({"ok": True, "output": f"wrote {call.args['path']}"}, call.args)
        return ToolOutcome({"ok": False, "error": f"no tool {call.name} here"}, call.args)

    @property
    def stream(self) -> str:
        return "".join(self.chunks)

    def entries(self, kind=None):
        self.comms.flush()
        out = [json.loads(ln) for ln in (self.root / "comms.jsonl").read_text().splitlines()]
        return [e for e in out if kind is None or e["kind"] == kind]

    def written(self, path="a.py") -> bool:
        return (self.root / "ws" / path).exists()


WRITE = Calls([("write_file", {"path": "a.py", "content": "x = 1\n"})], text="Writing a.py.")
DONE = Text("Done: a.py written.", chunks=2)


@pytest.fixture
def worker(srv, _provider, tmp_path):
    return Agent(_provider, tmp_path)


def _generation_config(srv, i):
    return srv.requests[i].body.get("generationConfig") or {}


# ---------------------------------------------------------------------------------------------
# a cut: no finish reason, a close-delimited EOF, a broken stream
# ---------------------------------------------------------------------------------------------

def test_no_finish_reason_is_asked_again_and_booked_as_a_failed_request(srv, worker):
    srv.enqueue(Text("I will write a.py", chunks=2, finish_reason=None, partial_usage=True,
                     usage=SentUsage(prompt=50, candidates=5)), WRITE, DONE)
    final = worker.session.send("TICKET T-001: write a.py")
    assert final == "Done: a.py written." and worker.written()
    assert worker.session.last_finish is Finish.STOP and worker.session.ended_normally
    # the text already shown stays shown; a note says why the turn is asked again
    s = worker.stream
    assert s.startswith("I will write a.py\n[the stream was cut after 17 characters (no finish "
                        "reason)") and "asking again (1 of 2)]" in s and "Writing a.py." in s
    [err] = worker.entries("error")
    assert err["data"]["failed"] is True and err["data"]["finish"] == "cut"
    assert (err["usage"]["input_tokens"], err["usage"]["output_tokens"],
            err["usage"]["requests"]) == (50, 5, 1)
    assert [e["data"]["finish"] for e in worker.entries("response")] == ["tool_calls", "stop"]
    assert len(worker.entries("request")) == len(srv.requests) == 3
    # the cut call is in the totals as the request it was, not as an answer
    assert worker.session.usage.requests == 3 and worker.session.requests_failed == 1
    assert worker.comms.total().input_tokens == sum(
        e["usage"]["input_tokens"] for e in worker.entries() if e["usage"])


def test_close_delimited_eof_is_asked_again(srv, worker):
    srv.enqueue(Fault.cut_stream(after_chunks=2, text="Let me write", mode="eof",
                                 partial_usage=True), WRITE, DONE)
    assert worker.session.send("TICKET T-001: write a.py") == "Done: a.py written."
    assert worker.written() and worker.session.last_finish is Finish.STOP
    assert worker.stream.startswith("Let me write\n[the stream was cut after 12 characters")
    [err] = worker.entries("error")
    assert err["usage"]["requests"] == 1 and err["usage"]["input_tokens"] > 0
    # the turn asked again is the same turn: the same history went out
    assert srv.requests[0].body["contents"] == srv.requests[1].body["contents"]


def test_an_abort_mid_tool_turn_is_asked_again(srv, worker):
    srv.enqueue(WRITE, Fault.cut_stream(after_chunks=1, text="Done: a.p"), DONE)
    assert worker.session.send("TICKET T-001: write a.py") == "Done: a.py written."
    assert worker.session.rounds == 2 and len(srv.requests) == 3


def test_a_turn_cut_every_time_fails_with_the_ending_named_and_no_work_claimed(srv, worker):
    srv.script(lambda r: Text("I will wr", finish_reason=None, partial_usage=True))
    with pytest.raises(ProviderError, match=r"no finish reason.*\(cut 3 times in a row; not asked again\)$") as ei:
        worker.session.send("TICKET T-001: write a.py")
    assert ei.value.finish is Finish.CUT and not worker.written()
    assert worker.session.last_finish is Finish.CUT and not worker.session.ended_normally
    assert len(srv.requests) == 3 and len(worker.entries("error")) == 3


# ---------------------------------------------------------------------------------------------
# MAX_TOKENS
# ---------------------------------------------------------------------------------------------

def test_max_tokens_on_a_worker_continues_the_turn(srv, worker):
    srv.enqueue(Text("Plan: first I will", finish_reason="MAX_TOKENS"), WRITE, DONE)
    assert worker.session.send("TICKET T-001: write a.py") == "Done: a.py written."
    assert worker.written() and worker.session.last_finish is Finish.STOP
    second = srv.requests[1].body["contents"]
    assert second[1] == {"role": "model", "parts": [{"text": "Plan: first I will"}]}
    assert second[2] == {"role": "user", "parts": [{"text": CONTINUE_PROMPT}]}
    assert "asking the model to continue" in worker.stream


def test_max_tokens_with_nothing_retries_with_a_larger_limit(srv, _provider, tmp_path):
    agent = Agent(_provider, tmp_path, max_output_tokens=1000)
    srv.enqueue(Fault.empty_candidate("no_parts", finish_reason="MAX_TOKENS"), WRITE, DONE)
    assert agent.session.send("TICKET T-001: write a.py") == "Done: a.py written."
    assert agent.written()
    limits = [_generation_config(srv, i).get("maxOutputTokens") for i in range(3)]
    assert limits == [1000, 2000, 1000]          # the larger limit for the retried turn only


def test_max_tokens_with_nothing_twice_is_an_error_naming_it(srv, worker):
    srv.script(lambda r: Fault.empty_candidate("no_parts", finish_reason="MAX_TOKENS"))
    with pytest.raises(ProviderError, match=r"output token limit.*MAX_TOKENS") as ei:
        worker.session.send("TICKET T-001: write a.py")
    assert ei.value.finish is Finish.MAX_TOKENS and not worker.written()
    assert [_generation_config(srv, i).get("maxOutputTokens") for i in range(2)] == [None, 65536]


def test_max_tokens_on_a_planner_names_max_tokens_and_spends_no_repair_round(srv, _provider,
                                                                             tmp_path):
    planner = Agent(_provider, tmp_path, tier="Tier 1", schema=EpicPlan)
    srv.enqueue(Text('{"tracks": [{"title": "Co', finish_reason="MAX_TOKENS"), Json(PLAN))
    with pytest.raises(ProviderError, match=r"Tier 1's JSON was cut off by the output token "
                                            r"limit \(finish reason MAX_TOKENS\)") as ei:
        run_structured(planner.session, "EPIC: build it", EpicPlan, REPAIR)
    assert ei.value.finish is Finish.MAX_TOKENS and len(srv.requests) == 1
    assert "not JSON" not in str(ei.value)
    assert planner.session.last_finish is Finish.MAX_TOKENS


# ---------------------------------------------------------------------------------------------
# thought signatures, MALFORMED_FUNCTION_CALL
# ---------------------------------------------------------------------------------------------

def test_a_trailing_signature_part_goes_back_with_its_function_call(srv, worker):
    sig = base64.b64encode(b"gemini-3-signature").decode()
    srv.enqueue(Calls([("write_file", {"path": "a.py", "content": "x = 1\n"})],
                      trailing_signature=sig, partial_usage=True), DONE)
    worker.session.send("TICKET T-001: write a.py")
    model_turn = srv.requests[1].body["contents"][1]
    assert model_turn == {"role": "model", "parts": [{
        "functionCall": {"name": "write_file", "args": {"path": "a.py", "content": "x = 1\n"}},
        "thoughtSignature": sig}]}


def test_a_signature_on_a_text_only_turn_is_kept_on_its_text(srv, worker):
    sig = base64.b64encode(b"text-turn-signature").decode()
    srv.enqueue(Text("First answer.", trailing_signature=sig), Text("Second answer."))
    worker.session.send("say something")
    worker.session.send("and again")
    model_turn = srv.requests[1].body["contents"][1]
    assert model_turn == {"role": "model", "parts": [{"text": "First answer.",
                                                      "thoughtSignature": sig}]}


def test_malformed_function_call_is_sampled_again_once(srv, worker):
    srv.enqueue(Fault.empty_candidate("no_content", finish_reason="MALFORMED_FUNCTION_CALL"),
                WRITE, DONE)
    assert worker.session.send("TICKET T-001: write a.py") == "Done: a.py written."
    assert worker.written() and len(srv.requests) == 3
    assert [e["data"]["finish"] for e in worker.entries("response")] == [
        "malformed", "tool_calls", "stop"]
    assert srv.requests[0].body["contents"] == srv.requests[1].body["contents"]


def test_malformed_function_call_twice_is_an_error_naming_it(srv, worker):
    srv.script(lambda r: Fault.empty_candidate("no_content",
                                               finish_reason="MALFORMED_FUNCTION_CALL"))
    with pytest.raises(ProviderError, match="MALFORMED_FUNCTION_CALL") as ei:
        worker.session.send("TICKET T-001: write a.py")
    assert ei.value.finish is Finish.MALFORMED and len(srv.requests) == 2
    assert not worker.written() and not worker.session.ended_normally


# ---------------------------------------------------------------------------------------------
# a cut Tier 1 stream
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["abort", "eof"])
def test_a_cut_tier1_json_stream_is_retried(srv, _provider, tmp_path, mode):
    planner = Agent(_provider, tmp_path, tier="Tier 1", schema=EpicPlan)
    srv.enqueue(Fault.cut_stream(after_chunks=2, text='{"tracks": [{"title": "Co', mode=mode,
                                 partial_usage=True), Json(PLAN, chunks=3))
    plan = run_structured(planner.session, "EPIC: build it", EpicPlan, REPAIR)
    assert plan == EpicPlan.model_validate(PLAN)
    assert len(srv.requests) == 2 and planner.session.last_finish is Finish.STOP
    assert planner.stream.endswith(json.dumps(PLAN))
    assert [e["data"]["finish"] for e in planner.entries("error")] == ["cut"]
