"""make_provider: the provider the settings name for a tier; ProviderPool: one provider per
name, shared by the tiers that use it.

Threads: make_provider runs on whichever thread asks (no state). A ProviderPool is shared by
the engine's threads: its providers dict is guarded by `_lock`, and a provider is built under
it (one build at a time, so an SDK is imported and a client made once per name).
"""
from __future__ import annotations

import threading
from typing import Any

from providers.base import Provider
from providers.offline import OfflineProvider

PROVIDERS = ("offline", "gemini", "openai", "ollama", "anthropic")


def provider_name(settings: Any, tier: str | None = None) -> str:
    """The provider that runs `tier` (None: the default for every tier)."""
    if tier is None:
        return settings.provider
    return settings.provider_for(tier)


def build_provider(name: str, settings: Any) -> Provider:
    """The provider called `name`, built from the settings. Raises MissingApiKey when its
    key is not in the environment, ValueError for an unknown name. Each SDK is imported only
    here, when its provider is chosen."""
    if name == "offline":
        return OfflineProvider(pace_s=settings.offline_pace_s,
                               latency_s=settings.offline_latency_s)
    if name == "gemini":
        from providers.gemini import GeminiProvider
        return GeminiProvider.from_settings(settings)
    if name == "openai":
        from providers.openai_chat import OpenAIChatProvider
        return OpenAIChatProvider.from_settings(settings)
    if name == "ollama":
        from providers.openai_chat import OpenAIChatProvider
        return OpenAIChatProvider.ollama_from_settings(settings)
    if name == "anthropic":
        from providers.anthropic_messages import AnthropicProvider
        return AnthropicProvider.from_settings(settings)
    raise ValueError(f"unknown provider {name!r} (choose one of {', '.join(PROVIDERS)})")


def make_provider(settings: Any, tier: str | None = None) -> Provider:
    """The provider for `tier` (Settings.tier_providers, else Settings.provider); with no
    tier, the default provider. Raises MissingApiKey / ValueError (build_provider)."""
    return build_provider(provider_name(settings, tier), settings)


def _config_of(name: str, settings: Any) -> Any:
    """What a provider is built from: a change of it means a new provider."""
    if name == "offline":
        return (settings.offline_pace_s, settings.offline_latency_s)
    return getattr(settings, name, None)


class ProviderPool:
    """One provider per name, built on first use, shared by every tier that runs on it (its
    HTTP client and connection pool with it).

    `for_tier(tier)` is what the engine calls for each new session; `update(settings)` after
    a settings change (providers whose own settings changed are dropped: running agents keep
    theirs until they end; they are closed at `close()`); `close()` at engine close.
    A `fixed` provider (tests, the engine's `provider=` argument) answers for every tier.
    """

    def __init__(self, settings: Any, fixed: Provider | None = None):
        self._lock = threading.Lock()
        self._settings = settings
        self._fixed = fixed
        self._providers: dict[str, tuple[Any, Provider]] = {}
        self._retired: list[Provider] = []

    def for_tier(self, tier: str | None) -> Provider:
        """The provider that runs `tier`. Raises MissingApiKey / ValueError."""
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            name = provider_name(self._settings, tier)
            config = _config_of(name, self._settings)
            have = self._providers.get(name)
            if have is not None and have[0] == config:
                return have[1]
            provider = build_provider(name, self._settings)
            if have is not None:
                self._retired.append(have[1])
            self._providers[name] = (config, provider)
            return provider

    def update(self, settings: Any) -> None:
        with self._lock:
            self._settings = settings
            for name, (config, provider) in list(self._providers.items()):
                if _config_of(name, settings) != config:
                    del self._providers[name]
                    self._retired.append(provider)

    def close(self) -> None:
        with self._lock:
            providers = [p for _, p in self._providers.values()] + self._retired
            self._providers.clear()
            self._retired = []
        for p in providers:
            close = getattr(p, "close", None)
            if callable(close):
                close()


def parse_tier_provider(spec: str) -> tuple[str, str, str | None]:
    """`"Tier 3=ollama:qwen2.5-coder:7b"` -> ("Tier 3", "ollama", "qwen2.5-coder:7b").

    The tier may be written "Tier 3", "tier3" or "3"; the model (optional) is everything after
    the first ":" (model names have colons of their own). Raises ValueError with the accepted
    form when the spec is not one."""
    form = ('use "Tier N=PROVIDER" or "Tier N=PROVIDER:MODEL", e.g. '
            '"Tier 3=ollama:qwen2.5-coder:7b"')
    tier_part, eq, rest = spec.partition("=")
    if not eq:
        raise ValueError(f"--tier-provider {spec!r}: no '='; {form}")
    digits = tier_part.strip().lower().removeprefix("tier").strip()
    if digits not in ("1", "2", "3", "4"):
        raise ValueError(f"--tier-provider {spec!r}: {tier_part.strip()!r} is not a tier "
                         f"(Tier 1 to Tier 4); {form}")
    name, _, model = rest.strip().partition(":")
    name = name.strip().lower()
    if name not in PROVIDERS:
        raise ValueError(f"--tier-provider {spec!r}: unknown provider {name!r} (choose one of "
                         f"{', '.join(PROVIDERS)})")
    model = model.strip()
    return f"Tier {digits}", name, (model or None)
