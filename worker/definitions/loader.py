"""Read one YAML file (YAML 1.2, ruamel.yaml) into a model, with every error at file:line:column.

ruamel keeps a line and column for every node, so a pydantic error's `loc` can be walked back to
the place in the file a marketer has to fix.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from worker.definitions import models
from worker.kit.problems import Problem


class Located:
    """A parsed YAML tree that answers 'where is this path in the file?'."""

    def __init__(self, path: str, tree: Any) -> None:
        self.path = path
        self.tree = tree

    def where(self, loc: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the node at `loc`; of the key itself when `key`."""
        node: Any = self.tree
        line, column = 1, 1
        if isinstance(node, CommentedMap | CommentedSeq):
            line, column = node.lc.line + 1, node.lc.col + 1
        for index, part in enumerate(loc):
            last = index == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                kline, kcol = node.lc.key(part)
                vline, vcol = node.lc.value(part)
                line, column = (kline + 1, kcol + 1) if key and last else (vline + 1, vcol + 1)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                iline, icol = node.lc.item(part)
                line, column = iline + 1, icol + 1
                node = node[part]
            # else: a union tag or a missing key: stay at the enclosing node
        return line, column

    def problem(self, loc: Sequence[str | int], message: str, *, key: bool = False) -> Problem:
        line, column = self.where(loc, key=key)
        return Problem(Path(self.path), line, column, message)


def _known_keys() -> set[str]:
    keys: set[str] = set()
    for value in vars(models).values():
        if isinstance(value, type) and issubclass(value, BaseModel):
            for name, field in value.model_fields.items():
                keys.add(field.alias or name)
    return keys


KNOWN_KEYS = _known_keys()
PLACES = {
    "Enroll": "enroll:",
    "Goal": "goal:",
    "Window": "window:",
    "Tracking": "tracking:",
    "CrmTask": "crm_task:",
    "Notify": "notify:",
    "Sequence": "the top level of a sequence",
    "Scoring": "a scoring file",
    "Policy": "a policy file",
    "Cap": "a cap (per:, max:)",
    "OneOffSend": "send:",
}


def _homes() -> dict[str, list[str]]:
    homes: dict[str, list[str]] = {}
    for name, place in PLACES.items():
        model = getattr(models, name)
        for field_name, field in model.model_fields.items():
            homes.setdefault(field.alias or field_name, []).append(place)
    for step_key in ("day", "at", "after", "only_if", "skip_if", "variants"):
        homes.setdefault(step_key, []).append("a step")
    return homes


HOMES = _homes()
STEP_KEYS = {"id", "day", "at", "after", "window", "only_if", "skip_if", "variants",
             *models.CHANNEL_KEYS}  # fmt: skip


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists (pydantic wants those)."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


LIST_FIELDS = {"on", "exit_on", "skip", "days", "skip_dates"}
UNION_TAGS = {*models.CHANNEL_KEYS, "variants", *models.REACTION_KEYS}
UNION_MEMBERS = {"str", "WhatsappTemplate", "function-plain"}


def _strip_tags(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """Remove pydantic's union tags (`steps.0.email.day` → `steps.0.day`) from an error path."""
    kept: list[str | int] = []
    for index, part in enumerate(loc):
        after_item = index > 0 and isinstance(loc[index - 1], int)
        if after_item and part in UNION_TAGS and _is_union_list(kept[:-1]):
            continue
        if part in UNION_MEMBERS:
            continue
        kept.append(part)
    return tuple(kept)


def _is_union_list(path: list[str | int]) -> bool:
    return (path[-1:] == ["steps"] and len(path) == 1) or (
        len(path) == 2 and path[0] in ("on", "on_segment")
    )


def _message(error: ErrorDetails) -> tuple[str, bool]:
    """A message a marketer can act on, and whether it points at a key rather than a value."""
    kind = error["type"]
    loc = error["loc"]
    name = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        if name in HOMES:
            return f"'{name}' does not belong here: it goes under {' or '.join(HOMES[name])}", True
        close = difflib.get_close_matches(name, KNOWN_KEYS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "; remove it or check the spelling"
        return f"unknown key '{name}'{hint}", True
    if kind == "missing":
        return f"missing required key '{name}'", False
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    field = str(loc[-1]) if loc and isinstance(loc[-1], str) else None
    if len(loc) >= 2 and isinstance(loc[-1], int) and loc[-2] in LIST_FIELDS:
        field = str(loc[-2])
    if field and not message.startswith(field):
        message = f"{field}: {message}"
    return message, False


def _dedupe_union_noise(errors: Iterable[ErrorDetails]) -> list[ErrorDetails]:
    """Drop pydantic's 'tried the other member of a union' errors when a better one exists."""
    seen: set[tuple[Any, ...]] = set()
    kept: list[ErrorDetails] = []
    for error in errors:
        error["loc"] = _strip_tags(error["loc"])
        signature = (error["loc"], error["type"])
        if signature in seen:
            continue
        seen.add(signature)
        kept.append(error)
    return kept


def _stray_keys(located: Located, loc: Sequence[str | int]) -> str:
    """Name the keys of a step that no step has: usually the channel, misspelled."""
    node: Any = located.tree
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return ""
    if not isinstance(node, dict):
        return ""
    stray = [str(k) for k in node if k not in STEP_KEYS]
    hints = []
    for key in stray:
        close = difflib.get_close_matches(key, models.CHANNEL_KEYS, n=1)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return f"; unknown key {', '.join(hints)}" if hints else ""


def parse_yaml(path: Path, display: str) -> tuple[Located | None, list[Problem]]:
    """Parse one file; a syntax error becomes a located Problem."""
    where = Path(display)
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(where, 1, 1, f"cannot read the file: {exc}")]
    try:
        documents = list(yaml.load_all(io.StringIO(text)))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        hint = ""
        if "found character '\\t'" in what:
            hint = "; indent with spaces, not tabs"
        elif "duplicate key" in what:
            hint = "; each key may appear once in a mapping"
        elif "mapping values are not allowed" in what:
            hint = "; a value with ': ' in it needs quotes"
        return None, [Problem(where, line, column, f"YAML syntax: {what}{hint}")]
    except YAMLError as exc:
        return None, [Problem(where, 1, 1, f"YAML syntax: {exc}")]
    documents = [d for d in documents if d is not None]
    if not documents:
        return None, [Problem(where, 1, 1, "the file is empty")]
    if len(documents) > 1:
        return None, [Problem(where, 1, 1, "one document per file: split it at the '---'")]
    tree = documents[0]
    if not isinstance(tree, CommentedMap):
        return None, [Problem(where, 1, 1, "expected a mapping of keys (name:, steps: …)")]
    return Located(display, tree), []


M = TypeVar("M", bound=BaseModel)


def build(model: type[M], located: Located) -> tuple[M | None, list[Problem]]:
    """Validate the tree as `model`; every pydantic error located in the file."""
    try:
        return model.model_validate(_plain(located.tree)), []
    except ValidationError as exc:
        problems = []
        for error in _dedupe_union_noise(exc.errors()):
            message, at_key = _message(error)
            if error["type"] == "step_channel":
                message += _stray_keys(located, error["loc"])
            problems.append(located.problem(error["loc"], message, key=at_key))
        return None, sorted(set(problems))


def plain(located: Located) -> Any:
    return _plain(located.tree)
