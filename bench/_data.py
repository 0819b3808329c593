"""A one-step bench sequence in a temporary folder, and many step runs made fast.

One lead goes through the real event API (`ingest`) to show what a lead, its enrollment and
its step run look like; that lead is removed and the rows are cloned with new ids, addresses
and due times, then written in bulk: SQLAlchemy Core `insert()` executemany in chunks, or
PostgreSQL COPY for a million rows. The sequence versions are recorded first (`deploy`), so
the dispatcher finds nothing to migrate.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, Table, create_engine, delete, insert, select, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel, col

from worker.config import Settings
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.store.db import transaction
from worker.store.migrate import upgrade
from worker.store.tables import (
    EnrollmentRow,
    EventRow,
    LeadRow,
    StepRunRow,
    TimelineRow,
)
from worker.support.deploy import deploy

SEQUENCE = """\
name: Bench
description: One email as soon as a lead signs up.
enroll: {on: bench_signup}
steps:
  - {id: hello, at: 0m, email: bench/hello}
"""

TEMPLATE = """\
---
subject: "{{ lead.first_name | default('Hello') }}, your first week with Acme"
preheader: "Five minutes a week on turning visitors into customers."
---
<html><body style="font-family: Helvetica, Arial, sans-serif; color: #222;">
<p>Hi {{ lead.first_name | default('there') }},</p>
<p>Thanks for signing up. Every Tuesday you will get one short email with the most useful
ideas we found on turning website visitors into customers: no fluff, five minutes to read.</p>
<p>Over the next week we will also send you a few of our readers' favourite pieces, so you
can start with the good stuff:</p>
<ul>
  <li><a href="https://acme.example/blog/pricing-pages">Pricing pages that sell</a></li>
  <li><a href="https://acme.example/blog/onboarding">Onboarding in three emails</a></li>
  <li><a href="https://acme.example/blog/forms">Shorter forms, more leads</a></li>
</ul>
<p>Glad you're here,<br>Maria from Acme</p>
<p style="font-size: 12px; color: #888;">You get this email because you signed up at
acme.example. <a href="{{ unsubscribe_url }}">Unsubscribe</a> with one click.</p>
</body></html>
"""

FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
TABLES = ("leads", "enrollments", "step_runs")


def write_project(folder: Path) -> None:
    (folder / "sequences").mkdir(parents=True, exist_ok=True)
    (folder / "sequences" / "bench.yaml").write_text(SEQUENCE)
    (folder / "templates" / "bench").mkdir(parents=True, exist_ok=True)
    (folder / "templates" / "bench" / "hello.html.j2").write_text(TEMPLATE)


def bench_runtime(folder: Path, database_url: str) -> Runtime:
    return build(
        Settings(
            home=folder / ".nurture",
            database_url=database_url,
            sequences_dir=folder / "sequences",
            templates_dir=folder / "templates",
        )
    )


@dataclass(frozen=True)
class Template:
    """One real lead's rows, as plain column → value dicts."""

    lead: dict[str, Any]
    enrollment: dict[str, Any]
    step_run: dict[str, Any]


def prepare(folder: Path, database_url: str) -> Template:
    """Migrate, record the sequence versions, and learn the rows of one enrolled lead."""
    upgrade(database_url)
    runtime = bench_runtime(folder, database_url)
    deploy(runtime, reload=False)
    payload = {"type": "bench_signup", "lead": {"email": "template@example.com",
                                                "first_name": "Ana"}}  # fmt: skip
    with transaction(runtime.database) as session:
        lead_id = ingest(
            session, runtime.engine, EventIn.model_validate(payload), datetime.now(UTC)
        ).lead_id
    with transaction(runtime.database) as session:
        lead = session.execute(select(LeadRow).where(col(LeadRow.id) == lead_id)).scalar_one()
        enrollment = session.execute(
            select(EnrollmentRow).where(col(EnrollmentRow.lead_id) == lead_id)
        ).scalar_one()
        step_run = session.execute(
            select(StepRunRow).where(col(StepRunRow.lead_id) == lead_id)
        ).scalar_one()
        found = Template(lead.model_dump(), enrollment.model_dump(), step_run.model_dump())
        session.execute(delete(StepRunRow).where(col(StepRunRow.lead_id) == lead_id))
        session.execute(delete(EnrollmentRow).where(col(EnrollmentRow.lead_id) == lead_id))
        session.execute(delete(EventRow).where(col(EventRow.lead_id) == lead_id))
        session.execute(delete(TimelineRow).where(col(TimelineRow.lead_id) == lead_id))
        session.execute(delete(LeadRow).where(col(LeadRow.id) == lead_id))
    runtime.database.dispose()
    return found


Rows = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def clones(
    template: Template, count: int, due_at: Callable[[int], datetime], prefix: str
) -> Iterator[Rows]:
    """`count` leads, each enrolled with one step run due at `due_at(number)`."""
    for number in range(count):
        lead_id, enrollment_id, run_id = (uuid.uuid4().hex for _ in range(3))
        lead = {**template.lead, "id": lead_id, "email": f"{prefix}{number}@example.com"}
        enrollment = {**template.enrollment, "id": enrollment_id, "lead_id": lead_id}
        run = {**template.step_run, "id": run_id, "lead_id": lead_id,
               "enrollment_id": enrollment_id, "due_at": due_at(number),
               "nominal_at": due_at(number)}  # fmt: skip
        yield lead, enrollment, run


def _chunks(rows: Iterable[Rows], size: int) -> Iterator[list[Rows]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def insert_core(database_url: str, rows: Iterable[Rows], chunk: int = 5_000) -> int:
    """SQLAlchemy Core `insert()` with executemany, `chunk` leads per statement set; one
    transaction per chunk."""
    engine = create_engine(database_url)
    written = 0
    try:
        for part in _chunks(rows, chunk):
            with engine.begin() as connection:
                for index, name in enumerate(TABLES):
                    connection.execute(insert(table(name)), [row[index] for row in part])
            written += len(part)
    finally:
        engine.dispose()
    return written


def libpq_url(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


def _copy_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def insert_copy(database_url: str, rows: Iterable[Rows], chunk: int = 100_000) -> int:
    """PostgreSQL COPY through psycopg, one transaction per `chunk` leads."""
    written = 0
    columns = {name: [c.name for c in table(name).columns] for name in TABLES}
    with psycopg.connect(libpq_url(database_url)) as connection:
        for part in _chunks(rows, chunk):
            with connection.transaction(), connection.cursor() as cursor:
                for index, name in enumerate(TABLES):
                    names = columns[name]
                    quoted = ", ".join(f'"{n}"' for n in names)
                    with cursor.copy(f"COPY {name} ({quoted}) FROM STDIN") as copy:
                        for row in part:
                            values = row[index]
                            copy.write_row([_copy_value(values[n]) for n in names])
            written += len(part)
    return written


def vacuum_analyze(database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT status, count(*) FROM step_runs GROUP BY status")
        ).all()
    return {str(status): int(count) for status, count in rows}


def scalar(engine: Engine, query: str, **params: Any) -> Any:
    with engine.begin() as connection:
        return connection.execute(text(query), params).scalar()
