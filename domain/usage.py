"""Token usage as providers report it, prices and the cost of a call.

Part of the models layer (door: models.py); imports nothing of ours but its siblings.
Pure data and functions: any thread, no state of its own.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# ---------------------------------------------------------------------------------------------
# Usage
# ---------------------------------------------------------------------------------------------

class Usage(BaseModel):
    """Token usage as the provider reported it, plus cost. Adds up with `+`."""
    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0       # prompt tokens (includes cached)
    output_tokens: int = 0      # candidates tokens
    cached_tokens: int = 0
    thoughts_tokens: int = 0
    tool_use_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    # the part of input_tokens written to the prompt cache on this call (Anthropic's
    # cache_creation_input_tokens, OpenAI's prompt_tokens_details.cache_write_tokens): priced
    # at the vendor's cache-write rate. Kept before cost_usd (the comms log's sums rely on it).
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            thoughts_tokens=self.thoughts_tokens + other.thoughts_tokens,
            tool_use_tokens=self.tool_use_tokens + other.tool_use_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            requests=self.requests + other.requests,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )

    def summary(self) -> dict[str, Any]:
        """The shape the CLI prints and the API serves."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "thoughts_tokens": self.thoughts_tokens,
            "tool_use_tokens": self.tool_use_tokens,
            "total_tokens": self.total_tokens,
            "requests": self.requests,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


class Price(BaseModel):
    """USD per million tokens. `cached`: a cache read; `cache_write`: a token written to the
    prompt cache (None: priced as `input`, for vendors whose cache writes cost nothing extra)."""
    input: float = 0.0
    output: float = 0.0
    cached: float = 0.0
    cache_write: float | None = None


# Published list prices (USD per 1M tokens; Gemini: prompts up to 200k) as of 2026;
# user-editable in Settings. Keys are model names (a dated or suffixed name takes the price of
# its longest known prefix). The offline model and local models (Ollama) are free: the `ollama`
# provider is priced 0 whatever its model is called (Settings.price_for).
# Anthropic: cache reads 0.1x input, 5-minute cache writes 1.25x input. OpenAI: cached input
# as listed, no cache-write charge. DeepSeek (OpenAI-compatible): cache hit / miss.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "offline": {"input": 0.0, "output": 0.0, "cached": 0.0},
    "gemini-2.5-pro": {"input": 1.25, "output": 10.0, "cached": 0.31},
    "gemini-2.5-flash": {"input": 0.30, "output": 2.50, "cached": 0.075},
    "gemini-2.5-flash-lite": {"input": 0.10, "output": 0.40, "cached": 0.025},
    "gpt-5": {"input": 1.25, "output": 10.0, "cached": 0.125},
    "gpt-5-mini": {"input": 0.25, "output": 2.0, "cached": 0.025},
    "gpt-5-nano": {"input": 0.05, "output": 0.40, "cached": 0.005},
    "gpt-4.1": {"input": 2.0, "output": 8.0, "cached": 0.50},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60, "cached": 0.10},
    "gpt-4o": {"input": 2.50, "output": 10.0, "cached": 1.25},
    "gpt-4o-mini": {"input": 0.15, "output": 0.60, "cached": 0.075},
    "o4-mini": {"input": 1.10, "output": 4.40, "cached": 0.275},
    "claude-opus-4": {"input": 15.0, "output": 75.0, "cached": 1.50, "cache_write": 18.75},
    "claude-opus-4-5": {"input": 5.0, "output": 25.0, "cached": 0.50, "cache_write": 6.25},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0, "cached": 0.30, "cache_write": 3.75},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cached": 0.10, "cache_write": 1.25},
    "claude-3-5-haiku": {"input": 0.80, "output": 4.0, "cached": 0.08, "cache_write": 1.0},
    "deepseek-chat": {"input": 0.28, "output": 0.42, "cached": 0.028},
    "deepseek-reasoner": {"input": 0.28, "output": 0.42, "cached": 0.028},
}


def cost_of(usage: Usage, price: Price) -> float:
    """Cost of one call: uncached input, cached input (reads) and cache writes at their own
    rates, output plus thoughts."""
    written = usage.cache_write_tokens
    uncached = (max(usage.input_tokens - usage.cached_tokens - written, 0)
                + usage.tool_use_tokens)
    out = usage.output_tokens + usage.thoughts_tokens
    write_rate = price.input if price.cache_write is None else price.cache_write
    return (uncached * price.input + usage.cached_tokens * price.cached
            + written * write_rate + out * price.output) / 1e6
