"""The model client layer's door: providers, agent sessions with the tool loop, the comms log,
token and cost accounting, the secret scrubber. The code lives in the `providers/` package;
this module re-exports its public face, so other layers, tests and bench import from here.

- `Provider` is the model seam: `generate(request, on_chunk, on_retry) -> ModelResponse`,
  blocking, called from executor threads. `OfflineProvider` is the embedded deterministic
  model; `FunctionProvider` wraps a plain function (tests); `GeminiProvider` talks to
  google-genai, `OpenAIChatProvider` to any OpenAI-compatible server (OpenAI, Ollama, vLLM,
  llama.cpp, OpenRouter, DeepSeek) through `openai`, `AnthropicProvider` to Claude through
  `anthropic` (each SDK imported lazily, on construction: importing this module imports none).
- `make_provider(settings, tier)` builds the provider a tier runs on
  (Settings.tier_providers, else Settings.provider); `ProviderPool(settings).for_tier(tier)`
  keeps one per name for an engine. `keys_present()` says which keys the environment holds
  (names only); `list_ollama_models(host)` what a local Ollama server has.
- Every answer reports how it ended as a `Finish` (STOP, TOOL_CALLS, MAX_TOKENS, CUT,
  MALFORMED, SAFETY, OTHER); `providers/endings.py` holds what each ending leads to.
- `AgentSession` owns one agent's history and runs the tool loop. After `send()` returns,
  `session.last_finish is Finish.STOP` (`session.ended_normally`): a cut or truncated answer is
  asked again or continued, or raised as a ProviderError naming its ending.
- `CommsLog` is the one record of every call; usage sums per tier/track/ticket are kept
  incrementally from tagged entries, so they stay exact when workers run in parallel.
- `SessionHistory(sessions_dir, current)` reads the earlier sessions' comms logs back after a
  restart (summaries cached by size and mtime, damaged lines reported); `SessionLog` reads
  one entry by entry; `stream_texts` rebuilds its streams.
- `Scrubber(secrets).scrub(text)` removes any 12-character piece of a key; the comms log,
  sessions (tool results, stream text) and provider errors use it. The engine applies
  `session.scrubber` (or `Scrubber.from_env()`) to what it shows outside a session.

Threads: see each module of providers/. This module has no state of its own.
Imports: models, events only (and the providers/ package).
"""
from __future__ import annotations

from providers.base import (ChunkFn, Cancelled, Finish, Message, MissingApiKey, ModelRequest,
                            ModelResponse, PlanError, Provider, ProviderError, RetryFn,
                            RoundLimit, ToolCall, ToolDecl, ToolReturn, ToolsTextCache,
                            estimate_tokens, request_text, tools_text)
from providers.comms import CommsLog, usage_from_entries
from providers.history import (EarlierUsage, LogSummary, SessionHistory, SessionLog,
                               stream_texts, summarize_log)
from providers.history import combine as combine_usage
from providers.endings import CONTINUE_PROMPT, EndingRules
from providers.anthropic_messages import AnthropicProvider
from providers.factory import (PROVIDERS, ProviderPool, build_provider, make_provider,
                               parse_tier_provider)
from providers.function import FunctionProvider
from providers.gemini import GeminiProvider
from providers.gemini_wire import gemini_api_key_from_env
from providers.offline import OfflineProvider
from providers.openai_chat import OpenAIChatProvider
from providers.openai_wire import list_ollama_models, ollama_host
from providers.sdk_retry import keys_present
from providers.secrets import Scrubber
from providers.session import AgentSession, ToolHandler, ToolOutcome, get_history_bleed_stats
from providers.structured import parse_structured, run_structured

__all__ = [
    "AgentSession", "AnthropicProvider", "OpenAIChatProvider", "PROVIDERS", "ProviderPool",
    "build_provider", "keys_present", "list_ollama_models", "ollama_host", "parse_tier_provider", "CONTINUE_PROMPT", "Cancelled", "ChunkFn", "CommsLog", "EndingRules",
    "Finish", "FunctionProvider", "GeminiProvider", "Message", "MissingApiKey", "ModelRequest",
    "ModelResponse", "OfflineProvider", "PlanError", "Provider", "ProviderError", "RetryFn",
    "RoundLimit", "Scrubber", "ToolCall", "ToolDecl", "ToolHandler", "ToolOutcome",
    "ToolReturn", "ToolsTextCache", "estimate_tokens", "gemini_api_key_from_env",
    "get_history_bleed_stats", "make_provider", "parse_structured", "request_text",
    "run_structured", "tools_text", "usage_from_entries",
    "EarlierUsage", "LogSummary", "SessionHistory", "SessionLog", "combine_usage",
    "stream_texts", "summarize_log",
]
