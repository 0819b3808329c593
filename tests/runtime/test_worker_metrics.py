"""`nurture worker --metrics-port` and `nurture beat --metrics-port` as real processes on
PostgreSQL + Redis: the worker's prefork children count their sends in prometheus-client's
multiprocess files and one scrape of the worker's port adds them up; both write heartbeats
that the API's /metrics reads from the database. And `nurture run`, which serves it all at
its API's /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis as redis_client

from tests.helpers import free_port, fresh_database, samples, write_project
from tests.library import WELCOME_DAY_ONE, greeting_template, welcome_project
from tests.servers.processes import Cluster, cluster_env, wait_for
from tests.servers.smtp import Sink
from worker.api.metrics import render
from worker.config import Settings
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime, build
from worker.store.db import transaction
from worker.store.migrate import upgrade

pytestmark = pytest.mark.integration
LEADS = 12
SENT = 'nurture_sends_total{channel="email",result="sent"}'


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_url: str, redis_url: str, smtp_sink: Sink
) -> Iterator[tuple[Cluster, Runtime]]:
    write_project(tmp_path, welcome_project(WELCOME_DAY_ONE, greeting_template("Hello")))
    database_url = fresh_database(postgres_url)
    upgrade(database_url)
    redis_client.Redis.from_url(redis_url).flushall()
    found = Cluster(tmp_path, cluster_env(tmp_path, database_url, redis_url, smtp_sink.port))
    runtime = build(
        Settings(
            home=tmp_path / ".nurture",
            database_url=database_url,
            sequences_dir=tmp_path / "sequences",
            templates_dir=tmp_path / "templates",
        )
    )
    try:
        yield found, runtime
    finally:
        found.stop_all()


def scrape(port: int) -> dict[str, float] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.TransportError:
        return None
    assert response.status_code == 200
    return samples(response.text)


def test_a_worker_serves_the_counts_of_all_its_children_and_both_roles_beat(
    cluster: tuple[Cluster, Runtime], smtp_sink: Sink
) -> None:
    processes, runtime = cluster
    worker_port, beat_port = free_port(), free_port()
    processes.start("worker", "worker", "--concurrency", "2", "--metrics-port", str(worker_port))
    processes.start("beat", "beat", "--metrics-port", str(beat_port))
    wait_for(lambda: scrape(worker_port) is not None, 60, "the worker's metrics port")
    wait_for(lambda: scrape(beat_port) is not None, 60, "beat's metrics port")

    now = datetime.now(UTC)
    for number in range(LEADS):
        event = EventIn.model_validate(
            {"type": "signed_up", "lead": {"email": f"lead{number}@example.com"}}
        )
        with transaction(runtime.database) as session:
            ingest(session, runtime.engine, event, now)

    def all_sent() -> bool:
        found = scrape(worker_port) or {}
        return found.get(SENT, 0.0) >= LEADS

    wait_for(all_sent, 90, f"{LEADS} sends counted at the worker's port")
    found = scrape(worker_port)
    assert found is not None
    assert found[SENT] == LEADS  # every child's count, added up, each send once
    assert len(smtp_sink.messages) == LEADS
    assert found['nurture_send_duration_seconds_count{channel="email"}'] == LEADS
    duration = found['nurture_provider_request_duration_seconds_count{provider="smtp"}']
    assert duration == LEADS
    children = list((Path(processes.env["NURTURE_HOME"]) / "metrics" / f"worker-{worker_port}")
                    .glob("counter_*.db"))  # fmt: skip
    assert children, "the prefork children count in multiprocess files"

    def both_alive() -> bool:
        read = samples(render(lambda: runtime))
        return all(read.get(f'nurture_processes_alive{{role="{r}"}}') == 1.0
                   for r in ("worker", "beat"))  # fmt: skip

    wait_for(both_alive, 30, "a heartbeat from the worker and from beat")
    read = samples(render(lambda: runtime))
    for role in ("worker", "beat"):
        stamp = read[f'nurture_heartbeat_timestamp_seconds{{role="{role}"}}']
        assert abs(stamp - datetime.now(UTC).timestamp()) < 60
    assert read['nurture_steps_due{channel="email"}'] == 0.0


def test_nurture_run_serves_everything_at_its_api(tmp_path: Path, smtp_sink: Sink) -> None:
    """The embedded default (SQLite, the filesystem broker): API, worker and beat in one
    process, their counters, the database's gauges and both heartbeats at one /metrics."""
    write_project(tmp_path, welcome_project(WELCOME_DAY_ONE, greeting_template("Hello")))
    env = cluster_env(tmp_path, f"sqlite:///{tmp_path / 'nurture.db'}", "", smtp_sink.port)
    processes = Cluster(tmp_path, env)
    port = free_port()
    try:
        processes.start("run", "run", "--port", str(port))
        token_file = tmp_path / ".nurture" / "api_token"
        wait_for(lambda: token_file.exists() and scrape(port) is not None, 60, "nurture run")
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        event = {"type": "signed_up", "lead": {"email": "ana@example.com"}}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/events", json=event, headers=headers)
        assert answer.status_code == 202

        def sent_and_alive() -> bool:
            found = scrape(port) or {}
            alive = [
                found.get(f'nurture_processes_alive{{role="{r}"}}') for r in ("worker", "beat")
            ]
            return found.get(SENT) == 1.0 and alive == [1.0, 1.0]

        wait_for(sent_and_alive, 60, "the send and both heartbeats at the API's /metrics")
        found = scrape(port)
        assert found is not None
        assert found['nurture_events_ingested_total{source="api",type="signed_up"}'] == 1.0
        assert found['nurture_send_duration_seconds_count{channel="email"}'] == 1.0
        assert found["nurture_database_up"] == 1.0
        assert len(smtp_sink.messages) == 1
    finally:
        processes.stop_all()
