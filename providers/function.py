"""FunctionProvider: a provider backed by a plain function (tests, benchmarks).

Threads: whichever executor thread calls generate(); `fn` must be safe to call from there.
State owned: none but `fn` and a ToolsTextCache.
"""
from __future__ import annotations

from collections.abc import Callable

from models import Usage
from providers.base import (ChunkFn, ModelRequest, ModelResponse, RetryFn, ToolsTextCache,
                            estimate_tokens)


class FunctionProvider:
    """A provider backed by a plain function `fn(request) -> ModelResponse | str` (tests)."""

    def __init__(self, fn: Callable[[ModelRequest], ModelResponse | str], name: str = "function"):
        self._fn = fn
        self.name = name
        self._request_text = ToolsTextCache()

    def generate(self, request: ModelRequest, on_chunk: ChunkFn,
                 on_retry: RetryFn | None = None) -> ModelResponse:
        out = self._fn(request)
        if isinstance(out, str):
            inp, o = estimate_tokens(self._request_text(request)), estimate_tokens(out)
            out = ModelResponse(text=out, usage=Usage(input_tokens=inp, output_tokens=o,
                                                      total_tokens=inp + o, requests=1),
                                model=request.model)
        if out.text:
            on_chunk(out.text)
        return out
