"""A 09:00 campaign: 10,000 steps due at the same moment, on PostgreSQL and Redis with real
workers — every step sent once, leased in due order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as redis_client
from sqlalchemy import Engine, create_engine, insert, text

from tests.helpers import fresh_database, write_project
from tests.library import unsubscribe_template
from tests.servers.processes import Cluster, cluster_env, wait_for
from tests.servers.smtp import Sink
from worker.config import Settings
from worker.runtime.process import build
from worker.store.db import transaction
from worker.store.migrate import upgrade
from worker.store.steps import claim_due
from worker.store.tables import EnrollmentRow, LeadRow, StepRunRow

pytestmark = pytest.mark.integration

STEPS = 10_000
SEQUENCE = "name: Campaign\nsteps:\n  - {id: announce, day: 1, email: c/announce}\n"
FILES = {
    "sequences/campaign.yaml": SEQUENCE,
    "templates/c/announce.html.j2": unsubscribe_template("News"),
}


def bulk_due(database: Engine, count: int, version: str, at: datetime) -> None:
    """`count` leads enrolled, each with one step due at `at` (1 ms apart, to give an order)."""
    leads, enrollments, runs = [], [], []
    for number in range(count):
        lead_id, enrollment_id = f"l{number:08d}", f"e{number:08d}"
        due = at + timedelta(milliseconds=number)
        leads.append({"id": lead_id, "email": f"lead{number}@example.com", "attributes": {},
                      "consent": {}, "suppressions": {}, "score": {}, "history": [],
                      "inactive_notified": False, "erased": False,
                      "created_at": at, "updated_at": at})  # fmt: skip
        enrollments.append({"id": enrollment_id, "lead_id": lead_id, "sequence_id": "campaign",
                            "status": "active", "enrolled_at": at, "anchor_at": at,
                            "anchored": False, "version": version, "events_seen": [],
                            "shift_seconds": 0})  # fmt: skip
        runs.append({"id": f"s{number:08d}", "lead_id": lead_id, "enrollment_id": enrollment_id,
                     "sequence_id": "campaign", "step_id": "announce", "kind": "step",
                     "position": 0, "status": "pending", "due_at": due, "nominal_at": due,
                     "anchored": False, "channel": "email", "version": version,
                     "attempts": 0})  # fmt: skip
    with database.begin() as connection:
        for table, values in ((LeadRow, leads), (EnrollmentRow, enrollments), (StepRunRow, runs)):
            for start in range(0, len(values), 2000):
                connection.execute(insert(table), values[start : start + 2000])


@pytest.fixture
def campaign(
    tmp_path: Path, postgres_url: str, redis_url: str, smtp_sink: Sink
) -> Iterator[tuple[Cluster, str]]:
    write_project(tmp_path, FILES)
    database_url = fresh_database(postgres_url)
    upgrade(database_url)
    redis_client.Redis.from_url(redis_url).flushall()
    settings = Settings(database_url=database_url, sequences_dir=tmp_path / "sequences",
                        templates_dir=tmp_path / "templates", home=tmp_path / ".nurture")  # fmt: skip
    version = build(settings).catalog.sequences["campaign"].version
    database = create_engine(database_url)
    bulk_due(database, STEPS, version, datetime.now(UTC) - timedelta(minutes=1))
    database.dispose()
    env = cluster_env(tmp_path, database_url, redis_url, smtp_sink.port)
    cluster = Cluster(tmp_path, {**env, "NURTURE_DISPATCH_BATCH": "500"})
    try:
        yield cluster, database_url
    finally:
        cluster.stop_all()


@pytest.mark.timeout(900)
def test_ten_thousand_steps_due_at_once_are_all_sent_once(
    campaign: tuple[Cluster, str], smtp_sink: Sink
) -> None:
    cluster, database_url = campaign
    cluster.start("beat", "beat")
    cluster.start("worker-a", "worker", "--concurrency", "3")
    cluster.start("worker-b", "worker", "--concurrency", "3")
    wait_for(lambda: len(smtp_sink.messages) >= STEPS, 800, f"{STEPS} messages")
    database = create_engine(database_url)
    wait_for(
        lambda: _count(database, "SELECT count(*) FROM step_runs WHERE status = 'sent'") == STEPS,
        30,
        "every row sent",
    )
    database.dispose()
    sent = smtp_sink.step_runs()
    assert len(sent) == len(set(sent)) == STEPS
    # arrival roughly follows due order: the first tenth to arrive were due early
    early = sorted(int(step[1:]) for step in sent[: STEPS // 10])
    assert early[-1] < STEPS // 2


def test_the_dispatcher_leases_in_due_order(postgres_url: str) -> None:
    database_url = fresh_database(postgres_url)
    upgrade(database_url)
    database = create_engine(database_url)
    bulk_due(database, 3000, "v", datetime.now(UTC) - timedelta(minutes=1))
    previous = ""
    leased_total = 0
    settings = Settings(database_url=database_url)
    while True:
        with transaction(build_engine(settings)) as session:
            leased = claim_due(session, datetime.now(UTC), 400)
        if not leased:
            break
        assert leased == sorted(leased)  # ids follow due order by construction
        assert leased[0] > previous
        previous = leased[-1]
        leased_total += len(leased)
    assert leased_total == 3000
    database.dispose()


def build_engine(settings: Settings) -> Engine:
    from worker.store.db import engine_for

    assert settings.database_url is not None
    return engine_for(settings.database_url)


def _count(database: Engine, sql: str) -> int:
    with database.connect() as connection:
        return int(connection.execute(text(sql)).scalar_one())
