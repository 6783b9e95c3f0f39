"""OpenAIChatProvider: any OpenAI-compatible server through the official `openai` SDK's Chat
Completions (OpenAI, Ollama, llama.cpp's server, vLLM, OpenRouter, DeepSeek). The SDK is
imported lazily, on construction.

Threads: any executor thread; one provider (and its `openai.OpenAI` client, whose httpx2
connection pool is thread-safe) is shared by every agent. State owned: the client and the
settings, fixed after construction, and `_json_mode_models` (the models whose server answered
that it has no json_schema response_format), guarded by `_lock`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from models import Usage
from providers.base import (ChunkFn, Finish, MissingApiKey, ModelRequest, ModelResponse,
                            ProviderError, RetryFn, ToolCall)
from providers.openai_wire import (OPENAI_MISSING_KEY, ChatAttempt, build_messages,
                                   build_tools, json_mode_system, lacks_json_schema,
                                   ollama_host, response_format, take_chunk)
from providers.sdk_retry import (Attempt, Failure, RetryPolicy, StreamCut, classify_sdk_error,
                                 key_from_env, run_with_retries)
from providers.sdk_heap import sdk_import
from providers.secrets import Scrubber

_log = logging.getLogger(__name__)

# finish_reason -> Finish
_FINISH = MappingProxyType({"stop": Finish.STOP, "tool_calls": Finish.TOOL_CALLS,
                            "function_call": Finish.TOOL_CALLS, "length": Finish.MAX_TOKENS,
                            "content_filter": Finish.SAFETY})


class _JsonSchemaRefused(Exception):
    """A 400 saying the server has no json_schema response_format: asked again in JSON mode."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class OpenAIChatProvider:
    """Chat Completions, streamed for every tier (`stream_options.include_usage`).

    - Tools (Tier 3/4): declared as functions; the calls arrive as deltas keyed by `index`
      (id and name on the first, the arguments split across the following ones, several calls
      interleaved), assembled here; each call's id is echoed in its `tool` message. Arguments
      that are not a JSON object make the answer Finish.MALFORMED (sampled again once).
    - Structured output (Tier 1/2): response_format json_schema with the plan's schema (strict).
      A server that answers 400 naming response_format / json_schema is asked again at once in
      JSON mode (`{"type": "json_object"}`, the schema in the system message; the session
      validates and repairs once); the model is remembered so later requests go straight to
      JSON mode. The switch is reported through on_retry (reason "fallback_json_mode").
    - Usage, exact, from the chunk that carries it (the last one, with empty choices, when
      include_usage is honoured): input_tokens = prompt_tokens (cached included),
      cached_tokens = prompt_tokens_details.cached_tokens, thoughts_tokens =
      completion_tokens_details.reasoning_tokens, output_tokens = completion_tokens - reasoning.
      A server that sends no usage at all gives a response with zero tokens (requests=1).
    - Endings: stop -> STOP (TOOL_CALLS with calls), tool_calls -> TOOL_CALLS, length ->
      MAX_TOKENS (the session's rules), content_filter or a refusal -> ProviderError(SAFETY);
      a stream that ends with no finish_reason (or breaks off) -> ProviderError(CUT) with the
      partial usage, never an answer.
    - Retries (sdk_retry.run_with_retries): 408/409/429/5xx, timeouts and refused
      connections before any text, with the server's retry-after(-ms). The SDK's own retries
      are off. Other 4xx: ProviderError with the API's own message.

    The key never appears in a message, the comms log or this object's repr (Scrubber).
    """

    def __init__(self, api_key: str | None, base_url: str | None = None, *,
                 name: str = "openai", timeout_s: float = 120.0, max_retries: int = 5,
                 initial_delay_s: float = 1.0, max_delay_s: float = 60.0,
                 max_tokens_param: str = "max_completion_tokens",
                 sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] | None = None):
        key = (api_key or "").strip()
        if not key:
            raise MissingApiKey(OPENAI_MISSING_KEY)
        with sdk_import("openai"):                     # lazily: only when this provider is built
            import openai
        self.name = name
        self.base_url = base_url or None               # None: OPENAI_BASE_URL or the default
        self.timeout_s = float(timeout_s)
        self.max_tokens_param = max_tokens_param
        self.policy = RetryPolicy(max_retries=max(0, int(max_retries)),
                                  initial_delay_s=max(0.0, float(initial_delay_s)),
                                  max_delay_s=max(float(initial_delay_s), float(max_delay_s)),
                                  sleep=sleep, rand=rand)
        self.scrubber = Scrubber([key])
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url,
                                     timeout=self.timeout_s, max_retries=0)
        self._where = str(self._client.base_url)
        self._lock = threading.Lock()
        self._json_mode_models: set[str] = set()

    # -- construction from settings ----------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Any, *, sleep: Callable[[float], None] = time.sleep
                      ) -> "OpenAIChatProvider":
        """OpenAI (or a compatible server): key from OPENAI_API_KEY, base URL from
        Settings.openai.base_url, else the SDK's OPENAI_BASE_URL. Raises MissingApiKey."""
        key = key_from_env("OPENAI_API_KEY", OPENAI_MISSING_KEY)
        o = settings.openai
        return cls(key, o.base_url or None, name="openai", timeout_s=o.timeout_s,
                   max_retries=o.max_retries, initial_delay_s=o.retry_initial_delay_s,
                   max_delay_s=o.retry_max_delay_s, max_tokens_param=o.max_tokens_param,
                   sleep=sleep)

    @classmethod
    def ollama_from_settings(cls, settings: Any, *, sleep: Callable[[float], None] = time.sleep
                             ) -> "OpenAIChatProvider":
        """Ollama's OpenAI-compatible endpoint: Settings.ollama.host, else OLLAMA_HOST, else
        http://127.0.0.1:11434; + /v1; no key (the SDK needs one: a placeholder is sent)."""
        o = settings.ollama
        return cls("ollama", ollama_host(o.host) + "/v1", name="ollama", timeout_s=o.timeout_s,
                   max_retries=o.max_retries, initial_delay_s=o.retry_initial_delay_s,
                   max_delay_s=o.retry_max_delay_s, max_tokens_param="max_tokens", sleep=sleep)

    def __repr__(self) -> str:
        return (f"OpenAIChatProvider(name={self.name!r}, base_url={self._where!r}, "
                f"timeout_s={self.timeout_s:g}, max_retries={self.policy.max_retries})")

    def close(self) -> None:
        self._client.close()

    # -- the call ---------------------------------------------------------------------------
    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        structured = request.response_schema is not None
        with self._lock:
            json_mode = structured and request.model in self._json_mode_models
        kw = self._params(request, json_mode)
        while True:
            try:
                return run_with_retries(
                    lambda st: self._attempt(request, kw, on_chunk, st),   # type: ignore[arg-type]
                    self._classify(structured and not json_mode),
                    policy=self.policy, scrubber=self.scrubber, model=request.model,
                    on_chunk=on_chunk, on_retry=on_retry, new_attempt=ChatAttempt)
            except _JsonSchemaRefused as e:
                with self._lock:
                    self._json_mode_models.add(request.model)
                json_mode = True
                kw = self._params(request, json_mode)
                if on_retry is not None:
                    on_retry({"attempt": 1, "status": 400, "delay_s": 0.0,
                              "error": self.scrubber.scrub(e.message),
                              "reason": "fallback_json_mode", "max_attempts": 1,
                              "model": request.model})

    def _params(self, request: ModelRequest, json_mode: bool) -> dict[str, Any]:
        system = request.system
        kw: dict[str, Any] = {"model": request.model, "stream": True,
                              "stream_options": {"include_usage": True}}
        if request.response_schema is not None:
            kw["response_format"] = response_format(request, json_mode)
            if json_mode:
                system = json_mode_system(system, request)
        kw["messages"] = build_messages(system, request.messages)
        if request.tools:
            kw["tools"] = build_tools(request.tools)
        if request.max_output_tokens:
            kw[self.max_tokens_param] = int(request.max_output_tokens)
        return kw

    def _attempt(self, request: ModelRequest, kw: dict[str, Any], on_chunk: ChunkFn,
                 st: ChatAttempt) -> ModelResponse:
        stream = self._client.chat.completions.create(**kw)
        whole = False
        try:
            for chunk in stream:
                take_chunk(chunk, st, on_chunk)
                if st.finish is not None and st.usage is not None:
                    whole = True        # the answer and its usage: only [DONE] follows
                    break
        finally:
            if whole:
                _release(stream.response)
            stream.close()
        if st.finish is None:
            raise StreamCut("the stream ended without a finish_reason")
        finish = _FINISH.get(st.finish, Finish.OTHER)
        text = "".join(st.texts)
        if st.refusal or finish is Finish.SAFETY:
            why = "".join(st.refusal) or f"finish_reason {st.finish}"
            raise ProviderError(f"{self.name} refused to answer: {why}", streamed=st.chars > 0,
                                usage=st.usage, finish=Finish.SAFETY)
        calls, bad = self._calls(request, st)
        if bad:
            return ModelResponse(text=text, usage=self._usage(st), model=request.model,
                                 finish_reason="malformed_tool_arguments",
                                 finish=Finish.MALFORMED)
        if finish is Finish.STOP and calls:
            finish = Finish.TOOL_CALLS
        if finish is Finish.TOOL_CALLS and not calls:
            finish = Finish.MALFORMED          # said tool_calls, sent none
        if not text and not calls and finish is Finish.STOP:
            raise ProviderError(f"the model returned an empty answer (finish_reason "
                                f"{st.finish})", usage=self._usage(st), finish=Finish.OTHER)
        return ModelResponse(text=text, tool_calls=calls, usage=self._usage(st),
                             model=request.model, finish_reason=st.finish, finish=finish)

    @staticmethod
    def _usage(st: ChatAttempt) -> Usage:
        return st.usage if st.usage is not None else Usage(requests=1)

    @staticmethod
    def _calls(request: ModelRequest, st: ChatAttempt) -> tuple[list[ToolCall], bool]:
        """The assembled tool calls in index order; True when some call's arguments are not a
        JSON object."""
        prior = sum(len(m.tool_calls) for m in request.messages)
        calls = []
        for n, index in enumerate(sorted(st.calls)):
            call_id, name, pieces = st.calls[index]
            raw = "".join(pieces).strip() or "{}"
            try:
                args = json.loads(raw)
            except ValueError:
                return [], True
            if not isinstance(args, dict) or not name:
                return [], True
            calls.append(ToolCall(id=call_id or f"call_{prior + n}", name=name, args=args))
        return calls, False

    def _classify(self, schema_sent: bool) -> Callable[[BaseException, Attempt], Failure]:
        def classify(e: BaseException, st: Attempt) -> Failure:
            f = classify_sdk_error(e, st, vendor=self.name, where=self._where,
                                   timeout_s=self.timeout_s)
            if schema_sent and f.status == 400 and lacks_json_schema(f.message):
                raise _JsonSchemaRefused(f.message) from e
            return f
        return classify


def _release(response: Any, limit: int = 65_536) -> None:
    """Read what is left of a finished stream's body (`data: [DONE]` and the chunked
    terminator) so its connection goes back to the pool. The sync SDK stops at [DONE] and
    closes the response unread, which throws the connection away: a new TCP and TLS
    handshake for every request. (The SDK's async stream drains it the same way.) A failure
    here costs only the connection, never the answer: it is logged, not raised."""
    read = 0
    try:
        for piece in response.stream:
            read += len(piece)
            if read > limit:
                break
    except Exception as e:  # noqa: BLE001 -- the answer is whole; logged, the connection closed
        _log.debug("could not read the end of a finished stream (%s: %s); its connection is "
                   "closed", type(e).__name__, e)
