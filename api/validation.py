"""Request-body validation for the API's routes: typed fields with clear 400 messages.

Pure functions, called on an API handler thread; no state.
"""
from __future__ import annotations

from typing import Any


class HttpError(Exception):
    """An error response: status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def field(body: dict[str, Any], name: str, types: type | tuple[type, ...], *,
          required: bool = True, default: Any = None, what: str = "") -> Any:
    if name not in body or (not required and body[name] is None):
        if required:
            raise HttpError(400, f"missing field {name!r}")
        return default
    v = body[name]
    # bool is an int in Python; a JSON true is never a number here, nor 1 a boolean
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False
    else:
        ok = isinstance(v, types)
    if not ok:
        raise HttpError(400, f"field {name!r} must be {what or _type_name(types)}, "
                             f"not {json_type(v)}")
    return v


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", dict: "an object",
             list: "an array"}
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in ts)


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number",
            dict: "an object", list: "an array"}.get(type(v), type(v).__name__)


def validation_message(e: Exception) -> str:
    """A pydantic ValidationError in one line, without its URL footers."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        parts = []
        for err in errors():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
        return "; ".join(parts)
    return str(e)


def models_of(items: Any, model: type, field_name: str) -> list[Any]:
    if not isinstance(items, list):
        raise HttpError(400, f"field {field_name!r} must be an array, not {json_type(items)}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise HttpError(400, f"{field_name}[{i}] must be an object, not {json_type(item)}")
        try:
            out.append(model.model_validate(item))
        except ValueError as e:   # pydantic's ValidationError is a ValueError
            raise HttpError(400, f"{field_name}[{i}] is invalid: {validation_message(e)}") from None
    return out

