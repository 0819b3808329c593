"""`nurture test`: sequence tests — a lead, events and the expected timeline — run by the same
simulator as `nurture simulate`. The format is documented in docs/sequence-tests.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from worker.authoring.simulate import SimulationError, parse_time, simulate
from worker.definitions.catalog import Catalog
from worker.definitions.loader import Located
from worker.engine.state import Entry, Event
from worker.ingest.schemas import LeadIn
from worker.kit.clock import utcnow

SEND_ACTIONS = frozenset({"send", "crm_task", "notify"})
DEFAULT_START = "2026-01-05T09:00:00Z"  # a Monday morning: windows rarely move Day 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestEvent(Strict):
    type: str
    at: str = "+0s"
    id: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Expected(Strict):
    at: str | None = None
    sequence: str | None = None
    step: str | None = None
    action: str | None = None
    channel: str | None = None
    reason: str | None = None
    subject: str | None = None
    """Matches when the rendered subject contains this text."""


class SequenceTest(Strict):
    name: str
    lead: LeadIn
    sequences: list[str] = Field(default_factory=list)
    start: str = DEFAULT_START
    until: str = "60d"
    events: list[TestEvent] = Field(default_factory=list)
    expect: list[Expected] = Field(default_factory=list)
    never: list[Expected] = Field(default_factory=list)
    sends: Literal["exact", "at_least"] = "exact"
    """exact: every send, crm_task and notify in the timeline must be expected."""


@dataclass
class Result:
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def run_folder(catalog: Catalog, folder: Path) -> list[Result]:
    results: list[Result] = []
    if not folder.is_dir():
        return results
    for path in sorted(folder.glob("*.y*ml")):
        results.extend(run_file(catalog, path))
    return results


def run_file(catalog: Catalog, path: Path) -> list[Result]:
    yaml = YAML(typ="rt")
    try:
        documents = [d for d in yaml.load_all(io.StringIO(path.read_text("utf-8"))) if d]
    except YAMLError as exc:
        return [Result(str(path), [f"{path}: YAML syntax: {exc}"])]
    results = []
    for document in documents:
        located = Located(str(path), document)
        name = document.get("name", path.stem) if isinstance(document, CommentedMap) else path.stem
        try:
            test = SequenceTest.model_validate(_plain(document))
        except ValidationError as exc:
            problems = [
                str(
                    located.problem(
                        error["loc"], f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
                    )
                )
                for error in exc.errors()
            ]
            results.append(Result(f"{path.name}: {name}", problems))
            continue
        results.append(Result(f"{path.name}: {test.name}", run_test(catalog, test, located)))
    return results


def run_test(catalog: Catalog, test: SequenceTest, located: Located) -> list[str]:
    """Problems found; an empty list is a pass."""
    try:
        start = parse_time(test.start, utcnow())
        until = parse_time("+" + test.until.lstrip("+"), start)
        events = [Event(e.type, parse_time(e.at, start), e.properties, e.id) for e in test.events]
        timeline = simulate(
            catalog,
            test.lead.to_lead("lead-1"),
            events=events,
            start=start,
            until=until,
            sequences=test.sequences or None,
        )
    except (SimulationError, ValueError) as exc:
        return [f"{located.path}: {exc}"]
    return _compare(test, timeline, start, located)


def _compare(
    test: SequenceTest, timeline: list[Entry], start: datetime, located: Located
) -> list[str]:
    problems: list[str] = []
    position = 0
    matched: set[int] = set()
    for index, expected in enumerate(test.expect):
        found = next(
            (i for i in range(position, len(timeline)) if _matches(expected, timeline[i], start)),
            None,
        )
        if found is None:
            where = located.problem(["expect", index], "")
            problems.append(
                f"{where.path}:{where.line}: expected {_describe(expected)}, "
                f"not found{_nearest(expected, timeline)}"
            )
            continue
        matched.add(found)
        position = found + 1
    for index, forbidden in enumerate(test.never):
        for entry in timeline:
            if _matches(forbidden, entry, start):
                where = located.problem(["never", index], "")
                problems.append(f"{where.path}:{where.line}: never expected, but: {_show(entry)}")
    if test.sends == "exact" and not problems:
        for i, entry in enumerate(timeline):
            if entry.action in SEND_ACTIONS and i not in matched:
                problems.append(f"{located.path}: unexpected {_show(entry)}")
    return problems


def _matches(expected: Expected, entry: Entry, start: datetime) -> bool:
    action = expected.action
    if action is None and entry.action not in SEND_ACTIONS:
        return False
    checks = (
        (action, entry.action),
        (expected.sequence, entry.sequence),
        (expected.step, entry.step),
        (expected.channel, entry.channel),
        (expected.reason, entry.reason),
    )
    if any(want is not None and want != got for want, got in checks):
        return False
    if expected.subject is not None and expected.subject not in (entry.subject or ""):
        return False
    return expected.at is None or parse_time(expected.at, start) == entry.at


def _describe(expected: Expected) -> str:
    fields = expected.model_dump(exclude_none=True)
    return "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"


def _show(entry: Entry) -> str:
    at = entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = [at, entry.sequence or "-", entry.step or "-", entry.action]
    if entry.channel:
        parts.append(entry.channel)
    if entry.reason:
        parts.append(f"({entry.reason})")
    return " ".join(parts)


def _nearest(expected: Expected, timeline: list[Entry]) -> str:
    """The same step elsewhere in the timeline: usually a timing mistake."""
    same = [e for e in timeline if expected.step and e.step == expected.step]
    if not same:
        return ""
    return "; the timeline has " + "; ".join(_show(e) for e in same)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, datetime):
        return node.isoformat()
    return node
