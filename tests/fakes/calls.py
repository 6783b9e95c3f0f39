"""Calling a provider in tests, shared by the provider test modules (openai, anthropic): a
recorder of streamed text and retries, an injected `sleep` that records the waits asked for
(so no test waits for a real backoff), a request builder, and `run` / `fail`.

Test helpers: whichever thread the test runs on; no state beyond each object's own.
"""
from __future__ import annotations

from typing import Any

import pytest

from ai_client import Message, ModelRequest, ProviderError

PLAN = {"tracks": [{"title": "Notes", "goal": "Write notes.", "acceptance_criteria": ["ok"]}]}


class Sleeps(list):
    """A provider's `sleep`: records each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Rec:
    """on_chunk / on_retry for generate(): the streamed text and the retries reported."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.retries: list[dict] = []

    def on_chunk(self, text: str) -> None:
        if text:
            self.chunks.append(text)

    def on_retry(self, info: dict) -> None:
        self.retries.append(info)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def request(text: str = "hello there", *, model: str, tier: str = "Tier 4",
            system: str = "be terse", messages: list[Message] | None = None, tools=(),
            schema: Any = None, limit: int | None = None) -> ModelRequest:
    return ModelRequest(tier=tier, model=model, system=system,
                        messages=messages if messages is not None else [Message("user", text)],
                        tools=tools, response_schema=schema, max_output_tokens=limit)


def run(p: Any, r: ModelRequest) -> tuple[Any, Rec]:
    rec = Rec()
    return p.generate(r, rec.on_chunk, rec.on_retry), rec


def fail(p: Any, r: ModelRequest, match: str | None = None) -> tuple[ProviderError, Rec]:
    rec = Rec()
    with pytest.raises(ProviderError, match=match) as ei:
        p.generate(r, rec.on_chunk, rec.on_retry)
    return ei.value, rec
