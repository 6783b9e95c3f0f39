"""Which provider and model each tier runs on, as a person reads and changes them (the Settings
dialog, the Epic panel's summary, the API's /settings/providers), and which environment
variables each provider reads (names only: a key's value never leaves the environment).

Part of the models layer (door: models.py); imports nothing of ours but its siblings.
Pure data and functions: any thread, no state of its own. The environment is read only where
a function says so (`environ` defaults to os.environ), and only to say whether a variable is
set, or, for a base URL, what it points at (without any user:password part).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from domain.core import TIERS
from domain.settings import DEFAULT_MODELS, PROVIDER_NAMES, Settings

TIER_ROLES: dict[str, str] = {"Tier 1": "Orchestrator", "Tier 2": "Tech Lead",
                              "Tier 3": "Worker", "Tier 4": "QA"}

# the environment variables each provider's key is read from, in the order it reads them
PROVIDER_KEY_VARS: dict[str, tuple[str, ...]] = {
    "offline": (), "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "openai": ("OPENAI_API_KEY",), "ollama": (), "anthropic": ("ANTHROPIC_API_KEY",)}
# where each provider's endpoint comes from when its setting is empty
PROVIDER_URL_VARS: dict[str, str] = {"gemini": "GOOGLE_GEMINI_BASE_URL",
                                     "openai": "OPENAI_BASE_URL", "ollama": "OLLAMA_HOST",
                                     "anthropic": "ANTHROPIC_BASE_URL"}
# the settings field that holds each provider's endpoint: Settings.<section>.<field>
PROVIDER_URL_FIELDS: dict[str, tuple[str, str]] = {
    "gemini": ("gemini", "base_url"), "openai": ("openai", "base_url"),
    "ollama": ("ollama", "host"), "anthropic": ("anthropic", "base_url")}
PROVIDER_DEFAULT_ENDPOINTS: dict[str, str] = {
    "gemini": "the SDK's default (generativelanguage.googleapis.com)",
    "openai": "https://api.openai.com/v1", "ollama": "http://127.0.0.1:11434",
    "anthropic": "https://api.anthropic.com"}
DEFAULT_CHOICE = "default"      # a tier that follows the default provider


@dataclass(frozen=True)
class TierChoice:
    """What one tier runs on: its provider and model, and whether the tier has a provider of
    its own (tier_providers) or follows the default one."""
    tier: str
    provider: str
    model: str
    own_provider: bool

    @property
    def role(self) -> str:
        return TIER_ROLES.get(self.tier, "")

    def describe(self) -> str:
        return f"{self.tier} ({self.role}): {self.provider} · {self.model}"

    def as_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model,
                "own_provider": self.own_provider, "role": self.role}


@dataclass(frozen=True)
class KeyStatus:
    """Whether a provider's key is in the environment: the variable names it reads and which
    of them are set. Never a value."""
    provider: str
    names: tuple[str, ...]
    present: tuple[str, ...]

    @property
    def needed(self) -> bool:
        return bool(self.names)

    @property
    def ok(self) -> bool:
        return not self.names or bool(self.present)

    def describe(self) -> str:
        if not self.names:
            return "no key needed" + (" (local)" if self.provider in ("offline", "ollama") else "")
        if self.present:
            return f"key present ({self.present[0]})"
        return f"key missing: set {' or '.join(self.names)} before starting Clutch"

    def as_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "present": list(self.present), "ok": self.ok}


def tier_choices(settings: Settings) -> list[TierChoice]:
    """What each tier runs on, in tier order: the one place the next run's providers and models
    are read from (the engine asks the same Settings methods)."""
    return [TierChoice(t, settings.provider_for(t), settings.model_for(t),
                       t in settings.tier_providers) for t in TIERS]


def key_status(provider: str, environ: Mapping[str, str] | None = None) -> KeyStatus:
    env = os.environ if environ is None else environ
    names = PROVIDER_KEY_VARS.get(provider, ())
    return KeyStatus(provider, names, tuple(n for n in names if (env.get(n) or "").strip()))


def safe_url(url: str) -> str:
    """A URL as it may be shown: without a user:password part, a query or a fragment."""
    url = url.strip()
    try:
        parts = urlsplit(url if "://" in url else "//" + url)
    except ValueError:
        return "(not a URL)"
    netloc = parts.netloc.rpartition("@")[2]
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return shown if "://" in url else shown.removeprefix("//")


def endpoint_of(settings: Settings, provider: str) -> str:
    """The provider's endpoint setting (empty: from its environment variable or the default)."""
    section, name = PROVIDER_URL_FIELDS[provider]
    return str(getattr(getattr(settings, section), name))


def endpoint_note(provider: str, environ: Mapping[str, str] | None = None) -> str:
    """Where an empty endpoint setting leads: the environment variable (and what it points at,
    shown without credentials), else the provider's default."""
    env = os.environ if environ is None else environ
    var = PROVIDER_URL_VARS[provider]
    value = (env.get(var) or "").strip()
    if value:
        return f"empty: {var} = {safe_url(value)}"
    return f"empty: {var} (not set), else {PROVIDER_DEFAULT_ENDPOINTS[provider]}"


def providers_view(settings: Settings, environ: Mapping[str, str] | None = None
                   ) -> dict[str, Any]:
    """Everything a person needs to see about providers, as JSON (the API's
    /settings/providers): the default provider, each tier's provider and model, and per
    provider its key status (names only), endpoint and models per tier."""
    in_use = settings.providers_in_use()
    providers: dict[str, Any] = {}
    for p in PROVIDER_NAMES:
        entry: dict[str, Any] = {"in_use": p in in_use,
                                 "key": key_status(p, environ).as_json()}
        if p in PROVIDER_URL_FIELDS:
            entry["endpoint"] = endpoint_of(settings, p)
            entry["endpoint_env"] = PROVIDER_URL_VARS[p]
            entry["endpoint_note"] = endpoint_note(p, environ)
            entry["models"] = dict(settings.models_of(p))
        providers[p] = entry
    return {"provider": settings.provider,
            "tiers": {c.tier: c.as_json() for c in tier_choices(settings)},
            "providers": providers}


# ---------------------------------------------------------------------------------------------
# changing them
# ---------------------------------------------------------------------------------------------

def normalize_tier(name: Any) -> str:
    """"Tier 3", "tier3", "TIER 3" or "3" -> "Tier 3". ValueError naming what is accepted."""
    digits = str(name).strip().lower().removeprefix("tier").strip()
    if not isinstance(name, (str, int)) or isinstance(name, bool) or digits not in \
            ("1", "2", "3", "4"):
        raise ValueError(f"{name!r} is not a tier: use \"Tier 1\" (Orchestrator), \"Tier 2\" "
                         f"(Tech Lead), \"Tier 3\" (Worker) or \"Tier 4\" (QA)")
    return f"Tier {digits}"


def normalize_provider(name: Any, *, allow_default: bool = False) -> str:
    """A provider's name, lower-cased; ValueError listing the choices for any other."""
    choices = list(PROVIDER_NAMES) + ([DEFAULT_CHOICE] if allow_default else [])
    if isinstance(name, str) and name.strip().lower() in choices:
        return name.strip().lower()
    what = f"{name!r}" if isinstance(name, str) else f"{name!r} ({type(name).__name__})"
    raise ValueError(f"unknown provider {what}: choose one of {', '.join(choices)}")


def folded(settings: Settings) -> Settings:
    """The same choices with each tier's own model (tier_models) moved into its provider's
    model table, so that a tier's model is edited in one place: model_for() gives the same
    model for every tier before and after. (A tier on the offline provider keeps its
    tier_models entry: the offline model has no table.)"""
    if not settings.tier_models:
        return settings
    data = settings.model_dump()
    left: dict[str, str] = {}
    for tier, model in settings.tier_models.items():
        provider = settings.provider_for(tier)
        if provider == "offline":
            left[tier] = model
        else:
            _table(data, provider)[tier] = model
    data["tier_models"] = left
    return Settings.model_validate(data)


def _table(data: dict[str, Any], provider: str) -> dict[str, str]:
    """The dumped settings' model table of a provider (Gemini's is the top-level `models`)."""
    if provider == "gemini":
        return data.setdefault("models", {})
    return data[provider].setdefault("models", dict(DEFAULT_MODELS.get(provider, {})))


def with_providers(settings: Settings, *, provider: Any = None,
                   tiers: Mapping[Any, Any] | None = None,
                   endpoints: Mapping[Any, Any] | None = None) -> Settings:
    """New settings with these changes (the others kept), checked as a whole; ValueError with
    every problem, each naming what is wrong and what is accepted.

    - provider: every tier's default provider;
    - tiers: {"Tier 3": {"provider": "ollama" | "default", "model": "qwen2.5-coder:7b"}} (either
      key may be left out; None for the whole entry = back to the default provider). A model is
      written to the tier's provider's own table; a tier whose provider changes drops its own
      model (tier_models), which belonged to the other provider;
    - endpoints: {"openai": "https://...", "ollama": "gpu-box:11434", ...}; "" = from the
      environment variable or the default."""
    errors: list[str] = []
    data = folded(settings).model_dump()
    if provider is not None:
        try:
            data["provider"] = normalize_provider(provider)
        except ValueError as e:
            errors.append(f"provider: {e}")
    for raw_tier, edit in (tiers or {}).items():
        try:
            tier = normalize_tier(raw_tier)
        except ValueError as e:
            errors.append(f"tiers: {e}")
            continue
        errors += _apply_tier(data, tier, edit)
    for raw_p, url in (endpoints or {}).items():
        errors += _apply_endpoint(data, raw_p, url)
    if errors:
        raise ValueError("; ".join(errors))
    return Settings.model_validate(data)


def _apply_tier(data: dict[str, Any], tier: str, edit: Any) -> list[str]:
    if edit is None:
        edit = {"provider": DEFAULT_CHOICE}
    if not isinstance(edit, Mapping):
        return [f"tiers.{tier}: must be an object with \"provider\" and/or \"model\", "
                f"not {edit!r}"]
    unknown = sorted(set(edit) - {"provider", "model"})
    if unknown:
        return [f"tiers.{tier}: unknown field(s) {', '.join(map(repr, unknown))} (use "
                f"\"provider\" and \"model\")"]
    before = data["tier_providers"].get(tier) or data["provider"]
    if "provider" in edit:
        try:
            p = normalize_provider(edit["provider"], allow_default=True)
        except ValueError as e:
            return [f"tiers.{tier}.provider: {e}"]
        if p == DEFAULT_CHOICE:
            data["tier_providers"].pop(tier, None)
        else:
            data["tier_providers"][tier] = p
    after = data["tier_providers"].get(tier) or data["provider"]
    if after != before:
        data["tier_models"].pop(tier, None)
    if "model" in edit and edit["model"] is not None:
        model = edit["model"]
        if not isinstance(model, str) or not model.strip():
            return [f"tiers.{tier}.model: must be a non-empty model name, not {model!r}"]
        model = model.strip()
        if after == "offline":
            if model != "offline":
                return [f"tiers.{tier}.model: {tier} runs on the offline provider, whose one "
                        f"model is \"offline\"; choose another provider for {model!r}"]
        else:
            _table(data, after)[tier] = model
            data["tier_models"].pop(tier, None)
    return []


def endpoint_problems(settings: Settings) -> list[str]:
    """What is wrong with the settings' endpoints, each a sentence (empty: nothing): the same
    checks as with_providers(endpoints=...), for settings edited as a whole (the Settings
    dialog) or read from config.toml."""
    data = settings.model_dump()
    out: list[str] = []
    for p in PROVIDER_URL_FIELDS:
        out += _apply_endpoint(data, p, endpoint_of(settings, p))
    return out


def _apply_endpoint(data: dict[str, Any], raw_provider: Any, url: Any) -> list[str]:
    try:
        p = normalize_provider(raw_provider)
    except ValueError as e:
        return [f"endpoints: {e}"]
    if p not in PROVIDER_URL_FIELDS:
        return [f"endpoints.{p}: the {p} provider has no endpoint"]
    if not isinstance(url, str):
        return [f"endpoints.{p}: must be a URL string (\"\" for the default), not {url!r}"]
    url = url.strip()
    if url and any(c.isspace() for c in url):
        return [f"endpoints.{p}: {safe_url(url)!r} has spaces in it"]
    if url and p != "ollama" and not url.startswith(("http://", "https://")):
        return [f"endpoints.{p}: {safe_url(url)!r} must start with http:// or https://"]
    section, name = PROVIDER_URL_FIELDS[p]
    data[section][name] = url
    return []
