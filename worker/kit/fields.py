"""Input errors named by field: pydantic's errors as `[{field, message}]`, the shape every 422
body and every refused webhook delivery carries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

FieldError = dict[str, str]
"""`{"field": "lead.email", "message": "…"}`."""


def field_errors(
    errors: Iterable[Any], drop_prefix: tuple[str, ...] = ("body",)
) -> list[FieldError]:
    """pydantic errors as [{field: "lead.email", message: …}]."""
    found = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        while loc and loc[0] in drop_prefix:
            loc = loc[1:]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        found.append({"field": ".".join(loc) or "body", "message": message})
    return found


def summary(fields: Sequence[FieldError]) -> str:
    """The fields' errors in one line: `lead.email: …; type: …`."""
    return "; ".join(f"{f['field']}: {f['message']}" for f in fields)
