"""The Jinja2 sandbox templates render in, and the words a marketer reads when Jinja fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment


def environment(
    loader: BaseLoader, autoescape: Callable[[str | None], bool]
) -> ImmutableSandboxedEnvironment:
    """The environment: strict about unknown names, quiet about empty ones."""
    # Immutable: templates cannot change the lead or event the worker passes in.
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=autoescape,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=True,
    )
    env.filters["default"] = env.filters["d"] = _default
    return env


def explain(exc: Exception) -> str:
    """What went wrong and what to do, for a marketer reading the error."""
    if isinstance(exc, TemplateSyntaxError):
        return f"Jinja syntax error: {exc.message}"
    if isinstance(exc, UndefinedError):
        hint = "check the name, give a fallback with `| default('...')` or test `is defined`"
        return f"{exc.message}: {hint}"
    if isinstance(exc, SecurityError):
        reason = str(exc).rstrip(".")
        return f"blocked by the template sandbox: {reason}; templates may only read plain values"
    if isinstance(exc, TemplateNotFound):
        return f"included template {exc.name!r} not found: create it under templates/"
    return f"rendering failed: {type(exc).__name__}: {exc}"


def _finalize(value: Any) -> Any:
    # A known-but-empty lead field should not print as "None" in a customer's inbox.
    return "" if value is None else value


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's default(), which also replaces None: lead fields are often present but empty."""
    if isinstance(value, Undefined) or value is None or (boolean and not value):
        return default_value
    return value
