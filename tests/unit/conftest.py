"""Helpers for engine tests: a catalog from inline YAML, and a simulated timeline."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.authoring.simulate import simulate
from worker.definitions.catalog import Catalog, load_catalog
from worker.engine.state import Entry, Event, Lead

EMAIL = (
    "---\nsubject: \"{{ step.id }} for {{ lead.first_name | default('you') }}\"\n---\n<p>Hi</p>\n"
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


CatalogFactory = Callable[..., Catalog]


@pytest.fixture
def make_catalog(tmp_path: Path) -> CatalogFactory:
    """Write sequence files (name → YAML) and a template for every name they use."""

    def build(files: dict[str, str], templates: dict[str, str] | None = None) -> Catalog:
        sequences = tmp_path / "sequences"
        sequences.mkdir(exist_ok=True)
        for name, text in files.items():
            (sequences / f"{name}.yaml").write_text(textwrap.dedent(text))
        for name, body in (templates or {}).items():
            path = tmp_path / "templates" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        for name in ("a", "b", "c", "d"):
            path = tmp_path / "templates" / "t" / f"{name}.html.j2"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(EMAIL)
            (tmp_path / "templates" / "t" / f"{name}.sms.j2").write_text("Hi {{ step.id }}")
        catalog, problems = load_catalog(sequences, tmp_path / "templates")
        assert not problems, "\n".join(map(str, problems))
        return catalog

    return build


def lead(**fields: object) -> Lead:
    values: dict[str, object] = {"id": "lead-1", "email": "ana@example.com"}
    values.update(fields)
    return Lead(**values)  # type: ignore[arg-type]


def timeline(
    catalog: Catalog,
    who: Lead,
    events: Sequence[tuple[str, str, Mapping[str, object]]] | None = None,
    *,
    start: str,
    until: str = "2027-06-01T00:00:00Z",
    sequences: list[str] | None = None,
) -> list[Entry]:
    evs = [Event(t, utc(at), dict(props)) for t, at, props in events or []]
    return simulate(
        catalog, who, events=evs, start=utc(start), until=utc(until), sequences=sequences
    )


def sends(entries: list[Entry]) -> list[tuple[str, str | None, str]]:
    """(UTC time, step, action) of every send, crm_task and notify."""
    return [
        (e.at.strftime("%Y-%m-%dT%H:%M"), e.step, e.action)
        for e in entries
        if e.action in ("send", "crm_task", "notify")
    ]
