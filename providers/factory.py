"""make_provider: the provider the settings name.

Threads: whichever builds the engine's provider (the engine does it once, lazily). No state.
"""
from __future__ import annotations

from typing import Any

from providers.base import Provider
from providers.offline import OfflineProvider


def make_provider(settings: Any) -> Provider:
    """The provider the settings name. Raises MissingApiKey for Gemini without a key;
    google-genai is imported only here, when Gemini is chosen."""
    if settings.provider == "offline":
        return OfflineProvider(pace_s=settings.offline_pace_s,
                               latency_s=settings.offline_latency_s)
    if settings.provider == "gemini":
        from providers.gemini import GeminiProvider
        return GeminiProvider.from_settings(settings)
    raise ValueError(f"unknown provider {settings.provider!r} (choose offline or gemini)")
