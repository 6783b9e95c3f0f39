"""GeminiProvider: Gemini through google-genai (imported lazily, on construction).

Threads: any executor thread; one provider (and its genai.Client) is shared by every agent.
State owned: the client and the settings, fixed after construction; each call's progress
lives in a GeminiAttempt local to the calling thread.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from providers.base import (Cancelled, ChunkFn, Finish, MissingApiKey, ModelRequest,
                            ModelResponse, ProviderError, RetryFn, ToolCall)
from providers.gemini_wire import (BLOCK_FINISH, MISSING_KEY_MESSAGE,
                                   RETRY_STATUSES, CallbackRaised, GeminiAttempt, GeminiFailure,
                                   StreamCut, build_config, build_contents,
                                   gemini_api_key_from_env, is_httpx_error, server_delay,
                                   take_chunk, usage_of)
from providers.sdk_retry import RetryPolicy
from providers.sdk_heap import sdk_import
from providers.secrets import Scrubber

# Gemini's finishReason -> Finish (anything else not in BLOCK_FINISH: OTHER)
_FINISH = MappingProxyType({"STOP": Finish.STOP, "MAX_TOKENS": Finish.MAX_TOKENS,
                            "MALFORMED_FUNCTION_CALL": Finish.MALFORMED,
                            "UNEXPECTED_TOOL_CALL": Finish.MALFORMED})


class GeminiProvider:
    """Gemini through google-genai: streaming for every tier, structured output (JSON schema)
    when the request has a `response_schema` (Tier 1 and 2), function calling with automatic
    function calling disabled when it has tools (Tier 3 and 4).

    google-genai is imported here, on construction, never when ai_client is imported. One
    `genai.Client` per provider, shared by every executor thread: its httpx client's connection
    pool is thread-safe, the SDK's retry state (tenacity) is kept per thread, and each request
    is built from options that are not mutated after construction.

    How an answer ended (ModelResponse.finish, or ProviderError.finish):
    - finishReason STOP -> Finish.STOP (TOOL_CALLS when it has function calls).
    - MAX_TOKENS -> a response with Finish.MAX_TOKENS (even with no text: thinking can eat the
      whole limit); MALFORMED_FUNCTION_CALL -> a response with Finish.MALFORMED. Neither is a
      final answer: AgentSession applies the rules of providers/endings.py.
    - NO finishReason at the end of the stream -> ProviderError(finish=CUT), whatever usage
      came: the real API sends (partial) usageMetadata on every chunk, so usage proves nothing.
      A close-delimited body cut short looks exactly like this to the SDK. So does a stream
      that breaks off (an incomplete chunked body, a stall past the timeout, an error event)
      after text was shown. The error carries the partial usage of the broken call, so it is
      booked as a failed request, not as an answer. A cut is not retried here: the session
      asks the turn again (endings.py), keeping the text already shown.
    - SAFETY and the other filter reasons, a blocked prompt -> ProviderError(finish=SAFETY).
    - A thought signature on any part of the turn is kept: on its function call, or, when it
      came on another part (a trailing `{"text": "", "thoughtSignature": ...}`), on the turn's
      first function call without one, else on the response (sent back on the text part).

    Retries here are for calls that failed before an answer started:
    - The SDK's `HttpRetryOptions` is set to attempts=1 (off): it ignores RetryInfo and
      Retry-After, covers only opening the response, and its retries would be invisible to the
      comms log.
    - Up to `max_retries` retries after the first attempt; before each wait
      `on_retry({"attempt", "status", "delay_s", "error", "reason", "max_attempts", "model"})`.
      * 429: waits max(server delay, capped exponential backoff with jitter); a server delay
        above `max_delay_s` is not waited for: ProviderError(status=429, retryable=True).
      * 408, 500, 502, 503, 504, a timeout or a connection error before any text: backoff
        `initial_delay_s * 2**(n-1)` capped at `max_delay_s`, jittered into [50 %, 100 %].
      * a response that is not valid JSON before any text: retried once.
      * other 4xx: not retried; ProviderError with the API's message and status.
    - The wait is slept in slices of at most 0.5 s through the injectable `sleep`, calling
      `on_chunk("")` between slices so AgentSession can see a cancel.

    The API key is never logged, put in a message or this object's repr: error text is passed
    through a Scrubber of the key (any 12-character piece of it) before it becomes a
    ProviderError.
    """

    name = "gemini"
    _SLEEP_SLICE_S = 0.5

    def __init__(self, api_key: str | None, base_url: str | None = None,
                 api_version: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 5, initial_delay_s: float = 1.0, max_delay_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] | None = None):
        key = (api_key or "").strip()
        if not key:
            raise MissingApiKey(MISSING_KEY_MESSAGE)
        with sdk_import("google.genai"):    # lazily: only when this provider is built
            from google import genai
            from google.genai import types
        self._types = types
        self.base_url = base_url or None          # None: GOOGLE_GEMINI_BASE_URL or the default
        self.api_version = api_version or None    # None: the SDK's default (v1)
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.initial_delay_s = max(0.0, float(initial_delay_s))
        self.max_delay_s = max(self.initial_delay_s, float(max_delay_s))
        self._retry = RetryPolicy(self.max_retries, self.initial_delay_s, self.max_delay_s,
                                  sleep=sleep, rand=rand, slice_s=self._SLEEP_SLICE_S)
        self.scrubber = Scrubber([key])
        http = types.HttpOptions(
            base_url=self.base_url, api_version=self.api_version,
            timeout=max(1, int(round(self.timeout_s * 1000))),          # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1))            # retries are ours
        self._client = genai.Client(api_key=key, vertexai=False, http_options=http)

    @classmethod
    def from_settings(cls, settings: Any, *, sleep: Callable[[float], None] = time.sleep
                      ) -> "GeminiProvider":
        """From Settings.gemini, with the key from the environment. Raises MissingApiKey."""
        key = gemini_api_key_from_env()
        g = settings.gemini
        return cls(api_key=key, base_url=g.base_url or None, api_version=g.api_version or None,
                   timeout_s=g.timeout_s, max_retries=g.max_retries,
                   initial_delay_s=g.retry_initial_delay_s, max_delay_s=g.retry_max_delay_s,
                   sleep=sleep)

    def __repr__(self) -> str:
        return (f"GeminiProvider(base_url={self.base_url or '(SDK default)'!r}, "
                f"api_version={self.api_version or '(SDK default)'!r}, "
                f"timeout_s={self.timeout_s:g}, max_retries={self.max_retries})")

    def close(self) -> None:
        self._client.close()

    # -- the call ---------------------------------------------------------------------------
    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        contents = build_contents(self._types, request.messages)
        config = build_config(self._types, request)
        attempt = 0
        malformed_retried = False
        while True:
            attempt += 1
            st = GeminiAttempt()
            try:
                return self._attempt(request, contents, config, on_chunk, st)
            except CallbackRaised as cb:
                raise cb.exc from None
            except (Cancelled, ProviderError):
                raise
            except Exception as e:  # noqa: BLE001 -- classified below, none swallowed
                f = self._classify(e, st)
            if f.finish is not None or not f.retryable:
                raise self._error(f, retryable=f.retryable, st=st)
            if f.reason == "malformed":
                if malformed_retried:
                    raise self._error(f, retryable=False)
                malformed_retried = True
            if attempt > self.max_retries:
                f.message += f" (gave up after {attempt} attempts)"
                raise self._error(f, retryable=True)
            if f.server_delay is not None and f.server_delay > self.max_delay_s:
                f.message += (f"; the server asks to wait {f.server_delay:g} s, longer than the "
                              f"longest retry delay allowed ({self.max_delay_s:g} s), so it "
                              f"was not retried")
                raise self._error(f, retryable=True)
            delay = self._retry.backoff(attempt, f.server_delay)
            if on_retry is not None:
                on_retry({"attempt": attempt, "status": f.status, "delay_s": round(delay, 3),
                          "error": self.scrubber.scrub(f.message), "reason": f.reason,
                          "max_attempts": self.max_retries + 1, "model": request.model})
            self._retry.wait(delay, on_chunk)

    def _attempt(self, request: ModelRequest, contents: list[Any], config: Any,
                 on_chunk: ChunkFn, st: GeminiAttempt) -> ModelResponse:
        stream = self._client.models.generate_content_stream(
            model=request.model, contents=contents, config=config)
        try:
            for chunk in stream:
                st.chunks += 1
                take_chunk(chunk, st, on_chunk)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        usage = usage_of(st.usage)
        if st.block_reason:
            raise ProviderError(f"Gemini blocked the prompt ({st.block_reason}); nothing was "
                                f"generated. Rephrase the request or leave out the content it "
                                f"objects to.", usage=usage, finish=Finish.SAFETY)
        if st.finish is None:
            raise StreamCut("the stream ended without a finish reason")
        if st.finish in BLOCK_FINISH:
            after = f" after {st.chars} characters" if st.chars else ""
            raise ProviderError(f"Gemini's {st.finish} filter blocked the answer{after} (finish "
                                f"reason {st.finish}); not retried", streamed=st.chars > 0,
                                usage=usage, finish=Finish.SAFETY)
        text = "".join(st.texts)
        calls, stray = self._calls(request, st)
        finish = _FINISH.get(st.finish, Finish.OTHER)
        if finish is Finish.STOP and calls:
            finish = Finish.TOOL_CALLS
        if not text and not calls and finish in (Finish.STOP, Finish.OTHER):
            raise ProviderError(f"the model returned an empty answer (finish reason "
                                f"{st.finish})", usage=usage, finish=finish)
        return ModelResponse(text=text, tool_calls=calls, usage=usage, model=request.model,
                             finish_reason=st.finish, finish=finish, thought_signature=stray)

    @staticmethod
    def _calls(request: ModelRequest, st: GeminiAttempt) -> tuple[list[ToolCall], bytes | None]:
        """The turn's function calls, each with its thought signature; a signature that came on
        another part goes to the first call without one. Returns (calls, the signature left
        over when there is no call to carry it)."""
        prior = sum(len(m.tool_calls) for m in request.messages)
        stray = list(st.stray_signatures)
        calls = []
        for i, (fc, signature) in enumerate(st.calls):
            name = fc.name or ""
            if not signature and stray:
                signature = stray.pop(0)
            calls.append(ToolCall(id=fc.id or f"{name}-{prior + i}", name=name,
                                  args=dict(fc.args or {}), thought_signature=signature or None))
        return calls, (stray[-1] if stray and not calls else None)

    # -- failures and waiting ---------------------------------------------------------------
    def _error(self, f: GeminiFailure, *, retryable: bool,
               st: GeminiAttempt | None = None) -> ProviderError:
        usage = usage_of(st.usage) if st is not None and st.usage is not None else None
        return ProviderError(self.scrubber.scrub(f.message), status=f.status,
                             retryable=retryable, streamed=f.streamed,
                             retry_after=f.server_delay, usage=usage, finish=f.finish)

    def _cut(self, st: GeminiAttempt, why: str) -> GeminiFailure:
        shown = f"after {st.chars} characters" if st.chars else "before any text arrived"
        return GeminiFailure(f"the stream was cut {shown} ({why}); the answer is incomplete",
                             reason="stream_cut", retryable=True, streamed=st.chars > 0,
                             finish=Finish.CUT)

    def _classify(self, e: BaseException, st: GeminiAttempt) -> GeminiFailure:
        from google.genai import errors
        shown = st.chars > 0
        if isinstance(e, StreamCut):
            return self._cut(st, "no finish reason")
        if isinstance(e, errors.APIError):
            code = e.code if isinstance(e.code, int) else None
            what = " ".join(str(x) for x in (code, e.status) if x)
            if shown:          # an error event in a stream that had started
                f = self._cut(st, f"Gemini reported {what}: {e.message or e}")
                f.status = code
                return f
            msg = f"Gemini API error {what}: {e.message or e}"
            reason = RETRY_STATUSES.get(code or 0)
            if reason is None:
                return GeminiFailure(msg, status=code)
            delay = server_delay(e) if code == 429 else None
            return GeminiFailure(msg, reason=reason, status=code, retryable=True,
                                 server_delay=delay)
        if is_httpx_error(e, "TimeoutException"):
            if shown:
                return self._cut(st, f"the stream stalled for more than {self.timeout_s:g} s")
            return GeminiFailure(f"no answer from Gemini within {self.timeout_s:g} s",
                                 reason="timeout", retryable=True)
        if is_httpx_error(e, "ConnectError"):
            return GeminiFailure(f"could not connect to Gemini at "
                                 f"{self.base_url or 'the default endpoint'}: {e}",
                                 reason="network", retryable=not shown, streamed=shown)
        if is_httpx_error(e, "TransportError"):
            return self._cut(st, f"{type(e).__name__}: {e}")
        if isinstance(e, ValueError):
            if shown:
                return self._cut(st, f"a chunk could not be read as JSON: {e}")
            return GeminiFailure(f"Gemini sent a response that could not be read as JSON ({e})",
                                 reason="malformed", retryable=True)
        return GeminiFailure(f"the Gemini call failed: {type(e).__name__}: {e}",
                             streamed=shown)
