"""Conditions (`if`, `only_if`, `skip_if`, `key`, `anchor`): Jinja2 expressions in a sandbox.

Undefined names are lenient here on purpose: `lead.attributes.plan != 'enterprise'` is true for a
lead without a plan, the way a marketer reads it. Templates, unlike conditions, are strict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from worker.kit.errors import NurtureError

_ENV = ImmutableSandboxedEnvironment(undefined=Undefined)


class ConditionError(NurtureError):
    """A condition that does not parse or cannot be evaluated."""


@lru_cache(maxsize=4096)
def compile_condition(expression: str) -> Callable[..., Any]:
    """Compile once; raise ConditionError with Jinja's own explanation when it does not parse."""
    try:
        return _ENV.compile_expression(expression, undefined_to_none=True)
    except TemplateSyntaxError as exc:
        raise ConditionError(f"condition {expression!r} does not parse: {exc.message}") from exc


def evaluate(expression: str, names: Mapping[str, Any]) -> Any:
    """The expression's value over `names`; None for undefined. Raises ConditionError."""
    compiled = compile_condition(expression)
    try:
        return compiled(**names)
    except Exception as exc:  # the sandbox raises many kinds; a marketer needs one message
        raise ConditionError(f"condition {expression!r} failed: {exc}") from exc


def is_true(expression: str, names: Mapping[str, Any]) -> bool:
    return bool(evaluate(expression, names))
