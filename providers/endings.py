"""How a model's answer ended, and what an agent does about it: one set of rules for every
provider (each reports the ending as a `Finish`; see providers/base.py).

| ending | worker (Tier 3: has tools) | planner (Tier 1/2: structured) | other (Tier 4) |
| --- | --- | --- | --- |
| STOP, TOOL_CALLS | accepted | accepted | accepted |
| CUT (no finish reason, a stream that broke off) | asked again, up to `max_cut_retries`; text already shown stays shown | the same (nothing irreversible happened) | the same |
| MAX_TOKENS with text, no calls | continued: the text kept, "continue" asked | error naming MAX_TOKENS | error naming MAX_TOKENS |
| MAX_TOKENS with whole tool calls | the calls run; the turn goes on | (no tools) | (no tools) |
| MAX_TOKENS, nothing at all (thinking ate it) | asked again with a larger limit, once | error naming MAX_TOKENS | error naming MAX_TOKENS |
| MALFORMED (MALFORMED_FUNCTION_CALL) | sampled again once, then an error naming it | the same | the same |
| SAFETY, OTHER | an error naming the reason | the same | the same |

A session never returns a final answer that did not end with STOP: the engine may rely on
`AgentSession.last_finish` being `Finish.STOP` (`AgentSession.ended_normally`) after send().

Threads: the executor thread driving the session. `EndingTracker` is per send() call, owned by
that thread; `EndingRules` is immutable.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from providers.base import Finish, ModelResponse, ProviderError

CONTINUE_PROMPT = ("Your previous answer was cut off by the output token limit (MAX_TOKENS). "
                   "Continue exactly where it stopped, without repeating what you already "
                   "wrote; finish the work, calling tools as needed.")


@dataclass(frozen=True)
class EndingRules:
    max_cut_retries: int = 2          # a cut answer is asked again this many times (per turn)
    max_malformed_retries: int = 1    # MALFORMED_FUNCTION_CALL is sampled again this many times
    max_token_retries: int = 1        # an empty MAX_TOKENS answer: asked again with more room
    output_ceiling: int = 65_536      # the largest output limit asked for (Gemini 2.5 / 3)


class Action(StrEnum):
    ACCEPT = "accept"         # the response stands (final, or tool calls to run)
    CONTINUE = "continue"     # keep the partial text in the history and ask to continue
    RETRY = "retry"           # ask the same turn again (max_output_tokens: the new limit)
    FAIL = "fail"             # raise `error`


@dataclass(frozen=True)
class Decision:
    action: Action
    note: str = ""                          # shown on the stream (retries, continuations)
    max_output_tokens: int | None = None    # RETRY: the output limit for the next request
    error: ProviderError | None = None      # FAIL


class EndingTracker:
    """The rules applied to one send(): counts the retries each ending has had."""

    def __init__(self, rules: EndingRules, *, tier: str, stream_id: str, worker: bool,
                 structured: bool):
        self.rules = rules
        self.tier = tier
        self.stream_id = stream_id
        self.worker = worker              # has tools: a MAX_TOKENS text can be continued
        self.structured = structured
        self.cuts = 0
        self.malformed = 0
        self.token_retries = 0

    def on_error(self, e: ProviderError) -> Decision:
        if e.finish == Finish.CUT and self.cuts < self.rules.max_cut_retries:
            self.cuts += 1
            return Decision(Action.RETRY, note=(
                f"\n[{e.message}; asking again ({self.cuts} of "
                f"{self.rules.max_cut_retries})]\n"))
        if e.finish == Finish.CUT:
            n = self.cuts + 1
            e.message += (f" (cut {'once' if n == 1 else f'{n} times in a row'}; "
                          f"not asked again)")
            e.args = (e.message,)
        return Decision(Action.FAIL, error=e)

    def on_response(self, resp: ModelResponse, limit: int | None) -> Decision:
        finish = resp.finish
        if finish is Finish.STOP or finish is Finish.TOOL_CALLS:
            return Decision(Action.ACCEPT)
        raw = resp.finish_reason
        if finish is Finish.MALFORMED:
            if self.malformed < self.rules.max_malformed_retries:
                self.malformed += 1
                return Decision(Action.RETRY, max_output_tokens=limit, note=(
                    f"\n[the model's function call could not be parsed ({raw}); "
                    f"sampling again]\n"))
            return self._fail(f"{self.stream_id}: the model's function call could not be "
                              f"parsed ({raw}), again after {self.malformed + 1} samples",
                              finish)
        if finish is Finish.MAX_TOKENS:
            return self._max_tokens(resp, limit)
        return self._fail(f"{self.stream_id}: the model stopped for reason {raw} "
                          f"(not a normal end); its answer may be incomplete", finish)

    def _max_tokens(self, resp: ModelResponse, limit: int | None) -> Decision:
        raw = resp.finish_reason or "MAX_TOKENS"
        at = f" at {limit} output tokens" if limit else ""
        if self.structured or not self.worker:
            what = "JSON" if self.structured else "answer"
            return self._fail(
                f"{self.tier}'s {what} was cut off by the output token limit{at} (finish reason "
                f"{raw}) after {len(resp.text)} characters; it is incomplete. Allow more output "
                f"tokens for this model, or ask for a smaller piece of work.", Finish.MAX_TOKENS)
        if resp.tool_calls:
            return Decision(Action.ACCEPT)       # whole calls: they run, the turn goes on
        if resp.text:
            return Decision(Action.CONTINUE, note=(
                f"\n[cut off by the output token limit ({raw}); asking the model to "
                f"continue]\n"))
        bigger = min(self.rules.output_ceiling, 2 * limit) if limit else self.rules.output_ceiling
        if self.token_retries < self.rules.max_token_retries and (not limit or bigger > limit):
            self.token_retries += 1
            return Decision(Action.RETRY, max_output_tokens=bigger, note=(
                f"\n[the output token limit{at} was used up before any answer ({raw}); asking "
                f"again with {bigger} output tokens]\n"))
        return self._fail(f"{self.stream_id}: the output token limit{at} was used up before "
                          f"any answer (finish reason {raw}), again with more room; the turn "
                          f"has no answer.", Finish.MAX_TOKENS)

    @staticmethod
    def _fail(message: str, finish: Finish) -> Decision:
        return Decision(Action.FAIL, error=ProviderError(message, finish=finish))
