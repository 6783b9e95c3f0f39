"""Structured (JSON) answers for Tier 1 and 2: parsing against a schema and the one repair round.

Threads: the executor thread driving the session. No state.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from providers.base import PlanError
from providers.session import AgentSession

_JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_structured(text: str, schema: type[BaseModel]) -> BaseModel:
    """Parse a model's JSON answer (bare, or in a ```json fence) against a schema.
    Raises ValueError with a message fit for the repair round."""
    candidate = text.strip()
    m = _JSON_FENCE.search(candidate)
    if m:
        candidate = m.group(1).strip()
    if not candidate:
        raise ValueError("the answer was empty")
    try:
        obj = json.loads(candidate)
    except json.JSONDecodeError as e:
        raise ValueError(f"the answer is not JSON ({e.msg} at line {e.lineno} column {e.colno})")
    try:
        return schema.model_validate(obj)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                         for err in e.errors()[:8])
        raise ValueError(f"the JSON does not match the schema: {errs}")


def run_structured(session: AgentSession, text: str, schema: type[BaseModel], repair: str,
                   extra_check: Callable[[BaseModel], None] | None = None) -> BaseModel:
    """Ask for structured output; one repair round with the validation error; then PlanError.

    `repair` is the repair message template, with an `{error}` field (prompts.REPAIR_USER)."""
    answer = session.send(text)
    try:
        result = parse_structured(answer, schema)
        if extra_check is not None:
            extra_check(result)
        return result
    except ValueError as first:
        session.log("error", direction="-", error=f"invalid output: {first}", repair=True)
        answer = session.send(repair.format(error=first))
        try:
            result = parse_structured(answer, schema)
            if extra_check is not None:
                extra_check(result)
            return result
        except ValueError as second:
            session.log("error", direction="-", error=f"invalid output after repair: {second}")
            raise PlanError(f"{session.tier} answered twice with output that is not a valid "
                            f"plan. First: {first}. After repair: {second}") from None
