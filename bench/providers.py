"""Providers: the per-request overhead each provider adds over its raw SDK call, on loopback.

For the openai provider (and ollama, the same class), the anthropic provider and, beside them,
the gemini provider: the same streamed request is sent N times through the raw SDK call
(`client.chat.completions.create(stream=True)`, `client.messages.create(stream=True)`,
`client.models.generate_content_stream`, iterating every chunk) and through the provider's
generate() (building the request from our messages, assembling text / tool calls / usage,
the ending rules' bookkeeping, the retry loop, the key scrubber), interleaved one by one so
the machine's load falls on both alike. Overhead = median(provider) - median(raw), for a
20-chunk text answer and for a 3-call tool answer (arguments split in 4 pieces each). The
servers are this repository's loopback fakes (tests/fakes/), one client per side, kept alive.
Target: < 5 ms per request. (The openai provider can come out faster than its raw call: the
sync SDK closes a stream's connection unread at [DONE], so the raw loop opens a new one per
request; the provider reads the rest of the body and reuses the connection.)
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import os
import statistics
import time

from _common import header, report, summary

from providers.base import Message, ModelRequest
from tools import TOOL_SPECS

N = int(os.environ.get("BENCH_PROVIDER_N", "150"))
TEXT = "The quick brown fox jumps over the lazy dog. " * 8
CALLS = [("write_file", {"path": f"src/m{i}.py", "content": "print('hello')\n" * 20})
         for i in range(3)]


def _pair(raw, ours, n: int = N) -> tuple[float, float]:
    """Median seconds of raw() and ours(), interleaved; a warm-up of each first."""
    for _ in range(5):
        raw()
        ours()
    a, b = [], []
    for _ in range(n):
        t = time.perf_counter()
        raw()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours()
        b.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def _req(tools=()) -> ModelRequest:
    return ModelRequest(tier="Tier 3", model="bench-model", system="You are a worker.",
                        messages=[Message("user", "Write the files.")], tools=tools)


def bench_openai() -> None:
    import openai

    from providers.openai_chat import OpenAIChatProvider
    from providers.openai_wire import build_messages, build_tools
    from tests.fakes.fake_openai import FakeOpenAI, OCalls, OText
    key = "sk-bench-0123456789abcdef"
    with FakeOpenAI(api_key=key) as srv:
        client = openai.OpenAI(api_key=key, base_url=srv.base_url, max_retries=0,
                               timeout=120.0)
        provider = OpenAIChatProvider(key, srv.base_url)
        for label, reply, tools in (("text, 20 chunks", OText(TEXT, chunks=20), ()),
                                    ("3 tool calls", OCalls(CALLS, arg_chunks=4), TOOL_SPECS)):
            srv.script(lambda r, reply=reply: reply)
            req = _req(tools)
            kw = dict(model=req.model, stream=True, stream_options={"include_usage": True},
                      messages=build_messages(req.system, req.messages))
            if tools:
                kw["tools"] = build_tools(tools)

            def raw():
                for _ in client.chat.completions.create(**kw):
                    pass

            def ours():
                provider.generate(req, lambda t: None)
            r, o = _pair(raw, ours)
            report(f"openai: raw SDK, {label}", r * 1e3, "ms")
            report(f"openai: provider, {label}", o * 1e3, "ms")
            report(f"openai: overhead, {label}", (o - r) * 1e3, "ms", target=5.0)
        provider.close()
        client.close()


def bench_anthropic() -> None:
    import anthropic

    from providers.anthropic_messages import AnthropicProvider
    from tests.fakes.fake_anthropic import AText, ATools, FakeAnthropic
    key = "sk-ant-bench-0123456789abcdef"
    with FakeAnthropic(api_key=key) as srv:
        client = anthropic.Anthropic(api_key=key, base_url=srv.root, max_retries=0,
                                     timeout=120.0)
        provider = AnthropicProvider(key, srv.root)
        for label, reply, tools in (("text, 20 chunks", AText(TEXT, chunks=20), ()),
                                    ("3 tool calls", ATools(CALLS, json_chunks=4),
                                     TOOL_SPECS)):
            srv.script(lambda r, reply=reply: reply)
            req = _req(tools)
            kw = provider.params(req)

            def raw():
                for _ in client.messages.create(**kw):
                    pass

            def ours():
                provider.generate(req, lambda t: None)
            r, o = _pair(raw, ours)
            report(f"anthropic: raw SDK, {label}", r * 1e3, "ms")
            report(f"anthropic: provider, {label}", o * 1e3, "ms")
            report(f"anthropic: overhead, {label}", (o - r) * 1e3, "ms", target=5.0)
        provider.close()
        client.close()


def bench_gemini() -> None:
    from google import genai
    from google.genai import types

    from providers.gemini import GeminiProvider
    from providers.gemini_wire import build_config, build_contents
    from tests.fakes.fake_gemini import Calls, FakeGemini, Text
    key = "AIza-bench-0123456789abcdef"
    with FakeGemini(api_key=key) as srv:
        client = genai.Client(api_key=key, http_options=types.HttpOptions(
            base_url=srv.base_url, retry_options=types.HttpRetryOptions(attempts=1)))
        provider = GeminiProvider(key, base_url=srv.base_url)
        for label, reply, tools in (("text, 20 chunks", Text(TEXT, chunks=20), ()),
                                    ("3 tool calls", Calls(CALLS), TOOL_SPECS)):
            srv.script(lambda r, reply=reply: reply)
            req = _req(tools)
            contents, config = build_contents(types, req.messages), build_config(types, req)

            def raw():
                for _ in client.models.generate_content_stream(model=req.model,
                                                               contents=contents,
                                                               config=config):
                    pass

            def ours():
                provider.generate(req, lambda t: None)
            r, o = _pair(raw, ours)
            report(f"gemini: raw SDK, {label}", r * 1e3, "ms")
            report(f"gemini: provider, {label}", o * 1e3, "ms")
            report(f"gemini: overhead, {label}", (o - r) * 1e3, "ms", target=5.0)
        provider.close()


def main() -> int:
    header(f"provider overhead over the raw SDK call, loopback, median of {N} interleaved "
           f"requests (load average {os.getloadavg()[0]:.2f})")
    bench_openai()
    bench_anthropic()
    bench_gemini()
    return summary("providers")


if __name__ == "__main__":
    raise SystemExit(main())
