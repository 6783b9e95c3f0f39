"""Providers: the per-request overhead each provider adds over its raw SDK call, on loopback.

For the openai provider, the same class as ollama (a server with no key, `max_tokens`), the
anthropic provider and, beside them, the gemini provider: the same streamed request is sent N
times through the raw SDK call (`client.chat.completions.create(stream=True)`,
`client.messages.create(stream=True)`, `client.models.generate_content_stream`, iterating
every chunk) and through the provider's generate() (building the request from our messages,
assembling text / tool calls / usage, the ending rules' bookkeeping, the retry loop, the key
scrubber), interleaved one by one so the machine's load falls on both alike. Overhead =
median(provider) - median(raw), for a 20-chunk text answer and for a 3-call tool answer
(arguments split in 4 pieces each). The servers are this repository's loopback fakes
(tests/fakes/), one client per side, kept alive. Target: < 5 ms per request.

The sync openai SDK closes a stream's connection unread at `[DONE]`, so the plain raw loop
opens a new connection per request, where the provider reads the rest of the body and keeps
it. So for openai and ollama the raw call is measured twice: as usually written, and reading
the body to its end the same way (`raw, kept`); the overhead is taken against the latter, the
like-for-like one. A table at the end puts every figure side by side.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets sys.path: repository root first)

import os
import statistics
import time
from collections.abc import Callable

from _common import header, report, summary

from providers.base import Message, ModelRequest
from tools import TOOL_SPECS

N = int(os.environ.get("BENCH_PROVIDER_N", "150"))
TEXT = "The quick brown fox jumps over the lazy dog. " * 8
CALLS = [("write_file", {"path": f"src/m{i}.py", "content": "print('hello')\n" * 20})
         for i in range(3)]
# (provider, case, raw, raw with the connection kept or None, provider): (wall, CPU) seconds
ROWS: list[tuple[str, str, tuple[float, float], tuple[float, float] | None,
                 tuple[float, float]]] = []


def _medians(fns: list[Callable[[], None]], n: int = N) -> list[tuple[float, float]]:
    """(median wall seconds, median seconds of the calling thread's CPU) of each function,
    called in turn n times (a warm-up of each first). The CPU figure counts only what this
    thread did (the SDK's parsing and ours), not the fake server's thread nor waiting, so it
    holds steady when other work loads the machine; the wall figure is what a user waits."""
    for _ in range(5):
        for f in fns:
            f()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for f, w, c in zip(fns, wall, cpu):
            t, u = time.perf_counter(), time.thread_time()
            f()
            c.append(time.thread_time() - u)
            w.append(time.perf_counter() - t)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


Figure = tuple[float, float]      # (wall, CPU) seconds


def _record(name: str, label: str, raw: Figure, ours: Figure, kept: Figure | None = None
            ) -> None:
    base = raw if kept is None else kept
    report(f"{name}: raw SDK, {label}", raw[0] * 1e3, "ms")
    if kept is not None:
        report(f"{name}: raw SDK, connection kept, {label}", kept[0] * 1e3, "ms")
    report(f"{name}: provider, {label}", ours[0] * 1e3, "ms")
    report(f"{name}: overhead, {label}", (ours[0] - base[0]) * 1e3, "ms", target=5.0)
    report(f"{name}: overhead, caller's CPU, {label}", (ours[1] - base[1]) * 1e3, "ms",
           target=5.0)
    ROWS.append((name, label, raw, kept, ours))


def _req(tools=()) -> ModelRequest:
    return ModelRequest(tier="Tier 3", model="bench-model", system="You are a worker.",
                        messages=[Message("user", "Write the files.")], tools=tools)


def bench_openai(name: str = "openai") -> None:
    """The OpenAI-compatible provider; name="ollama": as built for Ollama (no key)."""
    import openai

    from providers.openai_chat import OpenAIChatProvider
    from providers.openai_wire import build_messages, build_tools
    from tests.fakes.fake_openai import FakeOpenAI, OCalls, OText
    key = "sk-bench-0123456789abcdef" if name == "openai" else None
    with FakeOpenAI(api_key=key) as srv:
        client = openai.OpenAI(api_key=key or "ollama", base_url=srv.base_url, max_retries=0,
                               timeout=120.0)
        # its own client: one shared with `raw` would lend `raw` the kept connection to drop
        kept_client = openai.OpenAI(api_key=key or "ollama", base_url=srv.base_url,
                                    max_retries=0, timeout=120.0)
        provider = (OpenAIChatProvider(key, srv.base_url) if key else
                    OpenAIChatProvider("ollama", srv.base_url, name="ollama",
                                       max_tokens_param="max_tokens"))
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

            def raw_kept():
                stream = kept_client.chat.completions.create(**kw)
                for chunk in stream:
                    if chunk.usage is not None:    # the last chunk before [DONE]
                        break
                for _ in stream.response.stream:   # [DONE] and the end of the body
                    pass
                stream.close()

            def ours():
                provider.generate(req, lambda t: None)
            r, k, o = _medians([raw, raw_kept, ours])
            _record(name, label, r, o, k)
        provider.close()
        client.close()
        kept_client.close()


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
            r, o = _medians([raw, ours])
            _record("anthropic", label, r, o)
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
            r, o = _medians([raw, ours])
            _record("gemini", label, r, o)
        provider.close()


def main() -> int:
    header(f"provider overhead over the raw SDK call, loopback, median of {N} interleaved "
           f"requests (load average {os.getloadavg()[0]:.2f})")
    bench_openai("openai")
    bench_openai("ollama")
    bench_anthropic()
    bench_gemini()
    table()
    return summary("providers")


def table() -> None:
    """Every figure side by side (ms per request, medians): wall, then the caller's CPU."""
    header("side by side, ms per request (median); overhead against the like-for-like raw "
           "call; CPU = the calling thread's")
    print(f"{'provider':<10} {'answer':<16} {'raw SDK':>9} {'raw, kept':>10} {'provider':>9} "
          f"{'overhead':>9} | {'raw CPU':>8} {'ours CPU':>9} {'overhead':>9}")
    for name, label, raw, kept, ours in ROWS:
        base = raw if kept is None else kept
        kept_s = "-" if kept is None else f"{kept[0] * 1e3:.3f}"
        print(f"{name:<10} {label:<16} {raw[0] * 1e3:>9.3f} {kept_s:>10} {ours[0] * 1e3:>9.3f} "
              f"{(ours[0] - base[0]) * 1e3:>+9.3f} | {base[1] * 1e3:>8.3f} "
              f"{ours[1] * 1e3:>9.3f} {(ours[1] - base[1]) * 1e3:>+9.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
