"""The API's settings routes: the settings as a whole, and the providers and models each tier
runs on (read and changed), and the models a local Ollama server has. docs/api.md lists them.

Every route runs on a pool worker thread and calls only the engine's public thread-safe
methods (a change goes through `engine.update_settings`, so the window's Settings dialog and
Epic panel show it in the next frame). No state here. No key value is ever in an answer: keys
are reported by the names of the variables that hold them.
"""
from __future__ import annotations

from typing import Any

from api.handler import Handler
from api.validation import HttpError, field, json_type
from models import providers_view, with_providers
from multi_agent_conductor import ProviderError

PROVIDER_FIELDS = ("provider", "tiers", "endpoints")


def get_settings(h: Handler) -> None:
    s = h.engine.settings
    h.send_json(200, {"settings": s.model_dump(mode="json"), "providers": providers_view(s)})


def get_provider_settings(h: Handler) -> None:
    h.send_json(200, providers_view(h.engine.settings))


def put_provider_settings(h: Handler) -> None:
    """Change the default provider, one tier's provider and model, or an endpoint:
    {"provider": "anthropic", "tiers": {"Tier 3": {"provider": "ollama", "model": "..."}},
    "endpoints": {"ollama": "http://gpu-box:11434"}}; saved to .clutch/config.toml, used by
    the agents started from now on. 400 names every problem; nothing changes then."""
    body = h.body()
    unknown = sorted(set(body) - set(PROVIDER_FIELDS))
    if unknown:
        raise HttpError(400, f"unknown field(s) {', '.join(map(repr, unknown))}: send "
                             f"{', '.join(PROVIDER_FIELDS)}")
    if not any(body.get(k) is not None for k in PROVIDER_FIELDS):
        raise HttpError(400, "nothing to change: send provider, tiers or endpoints")
    provider = body.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise HttpError(400, f"field 'provider' must be a string, not {json_type(provider)}")
    tiers = field(body, "tiers", dict, required=False)
    endpoints = field(body, "endpoints", dict, required=False)
    try:
        new = with_providers(h.engine.settings, provider=provider, tiers=tiers,
                             endpoints=endpoints)
    except ValueError as e:
        raise HttpError(400, str(e)) from None
    h.call_engine(h.engine.update_settings, new)
    h.send_json(200, providers_view(h.engine.settings))


def get_ollama_models(h: Handler) -> None:
    """The models the Ollama server has: ?host=... or the settings' (else OLLAMA_HOST, else
    127.0.0.1:11434). 502 with the reason when no Ollama server answers there."""
    hosts = h.query.get("host")
    host: Any = hosts[-1] if hosts else None
    try:
        root, models = h.engine.ollama_models(host)
    except ProviderError as e:
        raise HttpError(502, str(e)) from None
    h.send_json(200, {"host": root, "models": models})
