"""Real worker, beat and `nurture run` processes, killed and restarted: every due step is sent
once, or ends `unknown` when the crash came after the provider accepted it.

Production shape: PostgreSQL + Redis. Embedded default: SQLite + Celery's filesystem broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as redis_client
from sqlalchemy import create_engine, text

from tests.helpers import free_port, fresh_database, write_project
from tests.library import WELCOME, unsubscribe_template, welcome_project
from tests.servers.processes import Cluster, cluster_env, wait_for
from tests.servers.smtp import Sink
from worker.config import Settings
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.store.db import transaction
from worker.store.migrate import upgrade
from worker.store.steps import claim_due
from worker.tasks import make_app

pytestmark = pytest.mark.integration

FILES = welcome_project(WELCOME, unsubscribe_template("Hello"))


def runtime_for(folder: Path, database_url: str) -> Runtime:
    return build(
        Settings(
            home=folder / ".nurture",
            database_url=database_url,
            sequences_dir=folder / "sequences",
            templates_dir=folder / "templates",
        )
    )


def post(runtime: Runtime, count: int, prefix: str = "lead") -> None:
    for number in range(count):
        payload = {"type": "signed_up", "lead": {"email": f"{prefix}{number}@example.com"}}
        with transaction(runtime.database) as session:
            ingest(session, runtime.engine, EventIn.model_validate(payload), datetime.now(UTC))


def statuses(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT status, count(*) FROM step_runs WHERE step_id = 'hello' GROUP BY status")
        ).all()
    engine.dispose()
    return {str(status): int(count) for status, count in rows}


@pytest.fixture
def production(
    tmp_path: Path, postgres_url: str, redis_url: str, smtp_sink: Sink
) -> Iterator[tuple[Cluster, Runtime, str]]:
    write_project(tmp_path, FILES)
    database_url = fresh_database(postgres_url)
    upgrade(database_url)
    redis_client.Redis.from_url(redis_url).flushall()
    cluster = Cluster(tmp_path, cluster_env(tmp_path, database_url, redis_url, smtp_sink.port))
    try:
        yield cluster, runtime_for(tmp_path, database_url), database_url
    finally:
        cluster.stop_all()


def test_redis_and_postgres_send_every_due_step_once(
    production: tuple[Cluster, Runtime, str], smtp_sink: Sink
) -> None:
    cluster, runtime, database_url = production
    cluster.start("worker-a", "worker", "--concurrency", "2")
    cluster.start("worker-b", "worker", "--concurrency", "2")
    cluster.start("beat", "beat")
    post(runtime, 40)
    wait_for(lambda: len(smtp_sink.messages) >= 40, 60, "40 messages")
    wait_for(lambda: statuses(database_url) == {"sent": 40}, 20, "40 rows sent")
    sent = smtp_sink.step_runs()
    assert len(sent) == len(set(sent)) == 40


def test_a_flushed_redis_loses_nothing(
    production: tuple[Cluster, Runtime, str], redis_url: str, smtp_sink: Sink
) -> None:
    cluster, runtime, database_url = production
    post(runtime, 20)
    with transaction(runtime.database) as session:  # a dispatcher leases and enqueues…
        leased = claim_due(session, datetime.now(UTC), 100, timedelta(seconds=3))
    producer = make_app(Settings(broker_url=redis_url, home=runtime.config.home))
    for step_run_id in leased:
        producer.send_task("step.send", args=[step_run_id])
    queue = redis_client.Redis.from_url(redis_url)
    assert queue.llen("celery") == 20
    queue.flushall()  # …and Redis loses every message before a worker takes one
    cluster.start("beat", "beat")
    cluster.start("worker", "worker", "--concurrency", "2")
    wait_for(lambda: statuses(database_url) == {"sent": 20}, 60, "all 20 sent after the sweep")
    sent = smtp_sink.step_runs()
    assert len(sent) == len(set(sent)) == 20


def test_a_worker_killed_after_the_claim_sends_once_after_the_sweeper(
    production: tuple[Cluster, Runtime, str], smtp_sink: Sink
) -> None:
    cluster, runtime, database_url = production
    cluster.start("beat", "beat")
    cluster.start("doomed", "worker", NURTURE_FAULT_POINT="after_claim")
    post(runtime, 1)
    wait_for(lambda: statuses(database_url) == {"claimed": 1}, 20, "the claim")
    cluster.kill("doomed")
    cluster.start("worker", "worker")
    wait_for(lambda: statuses(database_url) == {"sent": 1}, 30, "the send after the sweep")
    assert len(smtp_sink.messages) == 1


def test_a_worker_killed_after_the_provider_accepted_ends_unknown_and_is_not_resent(
    production: tuple[Cluster, Runtime, str], smtp_sink: Sink
) -> None:
    cluster, runtime, database_url = production
    cluster.start("beat", "beat")
    cluster.start("doomed", "worker", NURTURE_FAULT_POINT="after_send")
    post(runtime, 1)
    wait_for(lambda: len(smtp_sink.messages) == 1, 20, "the message at the sink")
    cluster.kill("doomed")
    cluster.start("worker", "worker")
    wait_for(lambda: statuses(database_url) == {"unknown": 1}, 30, "the step marked unknown")
    assert len(smtp_sink.messages) == 1


def test_the_embedded_default_survives_a_kill_and_sends_once(
    tmp_path: Path, smtp_sink: Sink
) -> None:
    write_project(tmp_path, FILES)
    database_url = f"sqlite:///{tmp_path / '.nurture' / 'nurture.db'}"
    env = cluster_env(tmp_path, database_url, "filesystem://", smtp_sink.port)
    cluster = Cluster(tmp_path, env)
    try:
        cluster.start("run", "run", "--port", str(free_port()), NURTURE_FAULT_POINT="after_claim")
        wait_for(lambda: (tmp_path / ".nurture" / "nurture.db").exists(), 30, "the database")
        wait_for(lambda: "ready" in cluster.log("run"), 30, "the worker")
        runtime = runtime_for(tmp_path, database_url)
        post(runtime, 5)
        wait_for(lambda: statuses(database_url).get("claimed", 0) >= 1, 20, "a claim")
        cluster.kill("run")  # kill -9 with a batch claimed, the rest queued or pending
        cluster.start("run-again", "run", "--port", str(free_port()))
        wait_for(lambda: statuses(database_url) == {"sent": 5}, 60, "all 5 sent")
        sent = smtp_sink.step_runs()
        assert len(sent) == len(set(sent)) == 5
    finally:
        cluster.stop_all()
