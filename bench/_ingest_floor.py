"""The floors `bench/ingest.py` measures Nurture against: an empty FastAPI endpoint (served by
uvicorn as `_ingest_floor:echo_app`) and raw psycopg writes of the rows Nurture wrote. Not a
benchmark itself.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from _data import libpq_url
from _ingest_load import BATCH
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb
from sqlalchemy import create_engine, text

from worker.api.events import EventBatch

TABLES = ("leads", "events", "enrollments", "step_runs", "timeline", "crm_outbox")


# -- the empty endpoint: the HTTP floor --------------------------------------------------------

echo_app = FastAPI()


@echo_app.post("/v1/events/batch")
def echo_batch(batch: EventBatch) -> JSONResponse:
    """Parses the same body as the real endpoint, answers one result per item, writes nothing."""
    results = [
        {"event_id": uuid.uuid4().hex, "lead_id": uuid.uuid4().hex, "duplicate": False,
         "enrolled": [], "exited": []}
        for _ in batch.events
    ]  # fmt: skip
    return JSONResponse({"results": results}, status_code=207)


@echo_app.get("/healthz")
def echo_health() -> dict[str, str]:
    return {"status": "ok"}


# -- the write floor: raw psycopg executemany ----------------------------------------------------


def row_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                name: int(connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())
                for name in TABLES
            }
    finally:
        engine.dispose()


def sample_rows(database_url: str) -> dict[str, dict[str, Any]]:
    """One real row of each table Nurture wrote, as column → value."""
    found = {}
    with psycopg.connect(libpq_url(database_url)) as connection:
        for name in TABLES:
            cursor = connection.execute(f"SELECT * FROM {name} ORDER BY random() LIMIT 1")
            names = [d.name for d in cursor.description or ()]
            row = cursor.fetchone()
            assert row is not None, name
            found[name] = dict(zip(names, row, strict=True))
    return found


def _value(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


def raw_writes(
    database_url: str, samples: dict[str, dict[str, Any]], added: dict[str, int], events: int
) -> float:
    """As many rows per table as Nurture added, cloned from its own rows, written with
    executemany in one transaction per 1,000 events; plus one UPDATE of a lead per
    behavioural event. Returns the seconds."""
    batches = max(1, events // BATCH)
    prepared: list[list[tuple[str, list[tuple[Any, ...]]]]] = [[] for _ in range(batches)]
    lead_ids: list[str] = []
    for name in TABLES:
        serial = name in ("timeline", "crm_outbox")  # ids from a sequence
        sample = {k: v for k, v in samples[name].items() if not (serial and k == "id")}
        columns = list(sample)
        quoted = ", ".join(f'"{c}"' for c in columns)
        statement = f"INSERT INTO {name} ({quoted}) VALUES ({', '.join(['%s'] * len(columns))})"
        for number, part in enumerate(_spread(added[name], batches)):
            rows = []
            for _ in range(part):
                row = dict(sample)
                if "id" in row:
                    row["id"] = uuid.uuid4().hex
                # every unique column (a Shopify shopper's lead has an external id too)
                for unique in ("email", "idempotency_key", "external_id"):
                    if row.get(unique) is not None:
                        row[unique] = f"{uuid.uuid4().hex}@example.com"
                if row.get("phone") is not None:
                    row["phone"] = f"+1555{uuid.uuid4().int % 10**7:07d}"
                if name == "leads":
                    lead_ids.append(row["id"])
                rows.append(tuple(_value(row[c]) for c in columns))
            prepared[number].append((statement, rows))
    update = "UPDATE leads SET score = %s, segment = %s, updated_at = %s WHERE id = %s"
    score = Jsonb(samples["leads"]["score"])
    with psycopg.connect(libpq_url(database_url)) as connection:
        began = time.perf_counter()
        for number, statements in enumerate(prepared):
            with connection.transaction(), connection.cursor() as cursor:
                for statement, rows in statements:
                    if rows:
                        cursor.executemany(statement, rows)
                behavioural = [
                    (score, "cold", datetime.now(UTC), lead_id)
                    for lead_id in lead_ids[number::batches][: BATCH // 2]
                ]
                cursor.executemany(update, behavioural)
        return time.perf_counter() - began


def _spread(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if n < extra else 0) for n in range(parts)]
