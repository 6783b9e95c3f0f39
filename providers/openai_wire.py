"""Chat Completions wire helpers that need no SDK: the request's messages, tools and
response_format, one streamed chunk into the attempt, usage, the Ollama host and its models.

Threads: the executor thread running OpenAIChatProvider.generate() (ChatAttempt is per call,
owned by it); `list_ollama_models` by whoever asks (the Settings dialog's worker). No state.
"""
from __future__ import annotations

import copy
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from models import Usage
from providers.base import ChunkFn, Message, ModelRequest, ProviderError
from providers.sdk_retry import Attempt, emit_text

OLLAMA_DEFAULT_HOST = "http://127.0.0.1:11434"
OPENAI_MISSING_KEY = (
    "No OpenAI API key: set the OPENAI_API_KEY environment variable (and OPENAI_BASE_URL for "
    "another OpenAI-compatible server) and start Clutch again, or choose the ollama or offline "
    "provider in Settings.")


@dataclass
class ChatAttempt(Attempt):
    """What one streamed Chat Completions attempt received so far."""
    texts: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    # tool call index -> [id, name, argument pieces]
    calls: dict[int, list[Any]] = field(default_factory=dict)
    finish: str | None = None
    chunks: int = 0


# ---------------------------------------------------------------------------------------------
# the request
# ---------------------------------------------------------------------------------------------

def build_messages(system: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our history as Chat Completions messages: a model turn is one assistant message (text
    and tool_calls, arguments as JSON strings); its tool returns are one `tool` message each,
    echoing the call's id."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for m in messages:
        if m.role == "user":
            if m.text:
                out.append({"role": "user", "content": m.text})
        elif m.role == "model":
            msg: dict[str, Any] = {"role": "assistant", "content": m.text or None}
            if m.tool_calls:
                msg["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name,
                                  "arguments": json.dumps(c.args, default=str)}}
                    for c in m.tool_calls]
            if m.text or m.tool_calls:
                out.append(msg)
        elif m.role == "tool":
            for r in m.tool_returns:
                out.append({"role": "tool", "tool_call_id": r.call_id,
                            "content": json.dumps(r.result, default=str)})
            if m.text:
                out.append({"role": "user", "content": m.text})
        else:
            raise ValueError(f"unknown message role {m.role!r}")
    return out


def build_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": json.loads(json.dumps(t.parameters,
                                                                                  default=str))}}
            for t in tools]


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema as OpenAI's strict structured outputs want it: every object closed
    (additionalProperties false) with every property required; no defaults."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("default", None)
            if node.get("type") == "object" and isinstance(node.get("properties"), dict):
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(out)
    return out


def response_format(request: ModelRequest, json_mode: bool) -> dict[str, Any]:
    """response_format for a structured request: the plan's JSON schema (strict), or JSON mode
    for a server that has no json_schema (the schema then goes in the system message)."""
    assert request.response_schema is not None
    if json_mode:
        return {"type": "json_object"}
    return {"type": "json_schema",
            "json_schema": {"name": request.response_schema.__name__,
                            "schema": strict_schema(request.response_schema.model_json_schema()),
                            "strict": True}}


def json_mode_system(system: str, request: ModelRequest) -> str:
    """The system message in JSON mode: the schema the answer must follow, spelled out (JSON
    mode guarantees JSON, not the schema; the session validates it and repairs once)."""
    assert request.response_schema is not None
    schema = json.dumps(request.response_schema.model_json_schema(), sort_keys=True)
    return (f"{system}\n\nAnswer with one JSON object, and nothing else, that follows this JSON "
            f"schema:\n{schema}")


def lacks_json_schema(message: str) -> bool:
    """A 400 that says the server does not take response_format json_schema."""
    low = message.lower()
    return "response_format" in low or "json_schema" in low


# ---------------------------------------------------------------------------------------------
# the stream
# ---------------------------------------------------------------------------------------------

def take_chunk(chunk: Any, st: ChatAttempt, on_chunk: ChunkFn) -> None:
    """One ChatCompletionChunk into `st`; its text to on_chunk. Usage may come on the last
    chunk with empty choices (include_usage) or on the finish chunk (llama.cpp)."""
    st.chunks += 1
    if chunk.usage is not None:
        st.usage = usage_of(chunk.usage)
    for choice in chunk.choices[:1]:
        delta = choice.delta
        if delta is not None:
            if delta.content:
                emit_text(delta.content, st, st.texts, on_chunk)
            if getattr(delta, "refusal", None):
                st.refusal.append(delta.refusal)
            for tc in delta.tool_calls or ():
                slot = st.calls.setdefault(tc.index, ["", "", []])
                if tc.id:
                    slot[0] = tc.id
                fn = tc.function
                if fn is not None:
                    if fn.name and not slot[1]:     # the name comes once, on the first delta
                        slot[1] = fn.name
                    if fn.arguments:
                        slot[2].append(fn.arguments)
        if choice.finish_reason:
            st.finish = choice.finish_reason


def usage_of(u: Any) -> Usage:
    """CompletionUsage -> Usage: input_tokens = prompt_tokens (cached ones included),
    cached_tokens = prompt_tokens_details.cached_tokens, thoughts_tokens =
    completion_tokens_details.reasoning_tokens, output_tokens = completion_tokens minus the
    reasoning ones (so output + thoughts = completion_tokens, as Gemini counts them)."""
    pd = u.prompt_tokens_details
    cd = u.completion_tokens_details
    cached = (pd.cached_tokens or 0) if pd is not None else 0
    written = (getattr(pd, "cache_write_tokens", None) or 0) if pd is not None else 0
    reasoning = (cd.reasoning_tokens or 0) if cd is not None else 0
    completion = u.completion_tokens or 0
    prompt = u.prompt_tokens or 0
    return Usage(input_tokens=prompt, output_tokens=max(completion - reasoning, 0),
                 cached_tokens=cached, thoughts_tokens=reasoning, cache_write_tokens=written,
                 total_tokens=u.total_tokens or prompt + completion, requests=1)


# ---------------------------------------------------------------------------------------------
# Ollama
# ---------------------------------------------------------------------------------------------

def ollama_host(configured: str = "", environ: Mapping[str, str] | None = None) -> str:
    """The Ollama server's root URL: the setting, else OLLAMA_HOST, else 127.0.0.1:11434.
    Accepts what OLLAMA_HOST accepts ("0.0.0.0", "host:port", "http://host:port"); a bind-all
    address is reached on the loopback."""
    env = os.environ if environ is None else environ
    raw = (configured or env.get("OLLAMA_HOST") or "").strip() or OLLAMA_DEFAULT_HOST
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 11434)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{host}:{port}{path}"


def list_ollama_models(host: str = "", timeout_s: float = 3.0,
                       environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The models the Ollama server has (GET /api/tags): [{"name", "size", "family",
    "parameter_size", "quantization"}], sorted by name. Raises ProviderError with a sentence
    saying which address did not answer, or what it answered, when there is no usable server."""
    root = ollama_host(host, environ)
    url = f"{root}/api/tags"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:   # noqa: S310 -- a URL we built
            body = r.read()
    except urllib.error.HTTPError as e:
        raise ProviderError(f"the Ollama server at {root} answered {e.code} to GET /api/tags; "
                            f"is it an Ollama server?", status=e.code) from None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", e)
        raise ProviderError(f"no Ollama server answers at {root} ({why}). Start it with "
                            f"`ollama serve`, or set OLLAMA_HOST to where it listens.") from None
    try:
        data = json.loads(body)
        models = data["models"]
        out = []
        for m in models:
            d = m.get("details") or {}
            out.append({"name": m.get("name") or m.get("model"), "size": m.get("size", 0),
                        "family": d.get("family", ""),
                        "parameter_size": d.get("parameter_size", ""),
                        "quantization": d.get("quantization_level", "")})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ProviderError(f"the server at {root} answered GET /api/tags with something that "
                            f"is not Ollama's model list ({type(e).__name__}: {e})") from None
    return sorted(out, key=lambda m: str(m["name"]))
