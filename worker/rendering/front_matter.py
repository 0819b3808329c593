"""An email template's front matter: the YAML between `---` lines, checked, each value with the
file line and column a marketer has to fix."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from worker.kit.problems import Problem
from worker.rendering.errors import RenderError

FRONT_MATTER_KEYS = ("subject", "preheader", "from", "reply_to", "transactional")


@dataclass(frozen=True)
class FrontMatter:
    """Front-matter values with the file (line, column) of each value."""

    values: dict[str, Any]
    positions: dict[str, tuple[int, int]]
    problems: list[Problem]


def split_front_matter(path: Path, text: str) -> tuple[str | None, str, int]:
    """(front-matter YAML or None, body, file line where the body starts)."""
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return None, text, 1
    for index in range(1, len(lines)):
        if lines[index].rstrip() == "---":
            return "\n".join(lines[1:index]) + "\n", "\n".join(lines[index + 1 :]), index + 2
    raise RenderError(
        Problem(path, 1, 1, "the front matter is not closed: add a `---` line after it")
    )


def no_front_matter(path: Path) -> Problem:
    return Problem(
        path, 1, 1, "email templates start with front matter: `---`, `subject: ...`, `---`"
    )


def read_front_matter(path: Path, yaml_text: str) -> FrontMatter:
    """Parse and check front-matter YAML (which starts on file line 2)."""
    try:
        data = YAML(typ="rt").load(yaml_text)
    except YAMLError as exc:
        return FrontMatter({}, {}, [_yaml_problem(path, yaml_text, exc)])
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        message = "the front matter must be `key: value` lines, starting with `subject: ...`"
        return FrontMatter({}, {}, [Problem(path, 2, 1, message)])
    positions = {str(key): _value_position(data, key, yaml_text) for key in data}
    problems = [_unknown_key(path, data, key) for key in data if key not in FRONT_MATTER_KEYS]
    # ruamel hands back str subclasses that carry YAML styling; keep plain values.
    values = {str(key): str(v) if isinstance(v, str) else v for key, v in data.items()}
    problems += _value_problems(path, values, positions)
    return FrontMatter(values, positions, problems)


def _yaml_problem(path: Path, yaml_text: str, exc: Exception) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if not isinstance(exc, MarkedYAMLError) or mark is None:
        return Problem(path, 1, 1, f"the front matter is not valid YAML: {exc}")
    message = f"the front matter is not valid YAML: {exc.problem}"
    lines = yaml_text.split("\n")
    if "{{" in lines[min(mark.line, len(lines) - 1)]:
        message += '; quote values with {{ ... }} in them: subject: "Hi {{ lead.first_name }}"'
    return Problem(path, mark.line + 2, mark.column + 1, message)


def _value_position(data: Any, key: Any, yaml_text: str) -> tuple[int, int]:
    """File (line, column) where a value's text starts; block scalars start on the next line."""
    line, column = _mark(data, key, "value")
    text = yaml_text.split("\n")[line]
    if text[column : column + 1] in ("|", ">"):
        return line + 3, 1
    return line + 2, column + 1


def _mark(data: Any, key: Any, part: Literal["key", "value"]) -> tuple[int, int]:
    """0-based (line, column) of a key or value in the front-matter YAML."""
    try:
        line, column = data.lc.key(key) if part == "key" else data.lc.value(key)
    except KeyError:
        # Keys pulled in by a `<<:` merge have no position of their own.
        return 0, 0
    return int(line), int(column)


def _unknown_key(path: Path, data: Any, key: Any) -> Problem:
    line, column = _mark(data, key, "key")
    close = difflib.get_close_matches(str(key), FRONT_MATTER_KEYS, n=1)
    hint = f"did you mean `{close[0]}`?" if close else f"use {', '.join(FRONT_MATTER_KEYS)}"
    return Problem(path, line + 2, column + 1, f"unknown front-matter key `{key}`: {hint}")


def _value_problems(
    path: Path, values: dict[str, Any], positions: dict[str, tuple[int, int]]
) -> list[Problem]:
    """Type checks for the known front-matter keys, and the required subject."""
    problems = []
    if "subject" not in values:
        problems.append(Problem(path, 1, 1, "the front matter has no subject: add `subject: ...`"))
    for key in ("subject", "preheader", "from", "reply_to"):
        if key not in values or (key != "subject" and values[key] is None):
            continue
        message = _text_value_problem(key, values[key])
        if message:
            problems.append(Problem(path, *positions[key], message))
    if "transactional" in values and not isinstance(values["transactional"], bool):
        message = "`transactional` must be true or false"
        problems.append(Problem(path, *positions["transactional"], message))
    return problems


def _text_value_problem(key: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"`{key}` is empty: give it text or remove the line"
    if not isinstance(value, str):
        return f'`{key}` must be text: put it in quotes, e.g. {key}: "..."'
    if key in ("from", "reply_to") and ("\n" in value or "\r" in value):
        return f"`{key}` must be a single line, like `Ana at Acme <ana@acme.example>`"
    return None
