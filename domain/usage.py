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
            "cost_usd": round(self.cost_usd, 6),
        }


class Price(BaseModel):
    """USD per million tokens."""
    input: float = 0.0
    output: float = 0.0
    cached: float = 0.0


# Published list prices (USD per 1M tokens, prompts up to 200k) as of 2026; user-editable in
# Settings. The offline model is free.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "offline": {"input": 0.0, "output": 0.0, "cached": 0.0},
    "gemini-2.5-pro": {"input": 1.25, "output": 10.0, "cached": 0.31},
    "gemini-2.5-flash": {"input": 0.30, "output": 2.50, "cached": 0.075},
    "gemini-2.5-flash-lite": {"input": 0.10, "output": 0.40, "cached": 0.025},
}


def cost_of(usage: Usage, price: Price) -> float:
    """Cost of one call: uncached input, cached input at its own rate, output plus thoughts."""
    uncached = max(usage.input_tokens - usage.cached_tokens, 0) + usage.tool_use_tokens
    out = usage.output_tokens + usage.thoughts_tokens
    return (uncached * price.input + usage.cached_tokens * price.cached + out * price.output) / 1e6
