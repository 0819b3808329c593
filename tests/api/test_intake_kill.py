"""An event answered 202 is never lost: a real `nurture api` on PostgreSQL answers early
(`Prefer: respond-async`) and is killed with SIGKILL before it applies what it queued; beat's
sweep (through a worker) applies every queued event exactly once, and a restarted API answers a
repeat with the applied event. And `nurture run` on SQLite takes both kinds of answer."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_client
from sqlalchemy import create_engine, text

from tests.helpers import free_port, fresh_database, write_project
from tests.library import WELCOME_DAY_ONE, welcome_project
from tests.servers.processes import Cluster, cluster_env, wait_for
from tests.servers.smtp import Sink
from worker.store.migrate import upgrade

pytestmark = pytest.mark.integration

TOKEN = "kill-token"
EARLY = {"Authorization": f"Bearer {TOKEN}", "Prefer": "respond-async"}
COUNT = 8


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_url: str, redis_url: str, smtp_sink: Sink
) -> Iterator[tuple[Cluster, str]]:
    write_project(tmp_path, welcome_project(WELCOME_DAY_ONE, "---\nsubject: Hi\n---\n<p>Hi</p>\n"))
    database_url = fresh_database(postgres_url)
    upgrade(database_url)
    redis_client.Redis.from_url(redis_url).flushall()
    env = {
        **cluster_env(tmp_path, database_url, redis_url, smtp_sink.port),
        "NURTURE_API_TOKENS": TOKEN,
        "NURTURE_INTAKE_SWEEP_INTERVAL": "0.5",
    }
    found = Cluster(tmp_path, env)
    try:
        yield found, database_url
    finally:
        found.stop_all()


def rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query)).all()]
    finally:
        engine.dispose()


def start_api(cluster: Cluster, name: str, **env: str) -> str:
    port = free_port()
    cluster.start(name, "api", "--port", str(port), "--workers", "2", **env)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(base), 30, "the API")
    return base


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def signup(number: int) -> dict[str, Any]:
    return {"id": f"k-{number}", "type": "signed_up", "lead": {"email": f"l{number}@example.com"}}


def test_an_api_killed_right_after_202_loses_nothing(cluster: tuple[Cluster, str]) -> None:
    processes, database_url = cluster
    # its own drainer waits: the kill comes with every answered event still queued
    base = start_api(processes, "api", NURTURE_FAULT_POINT="before_drain")
    answered = []
    with httpx.Client(base_url=base, headers=EARLY, timeout=10) as client:
        for number in range(COUNT):
            response = client.post("/v1/events", json=signup(number))
            assert response.status_code == 202, response.text
            answered.append(response.json()["event_id"])
    processes.kill("api")  # SIGKILL right after the last 202

    assert rows(database_url, "SELECT count(*) FROM event_intake") == [(COUNT,)]
    assert rows(database_url, "SELECT count(*) FROM events") == [(0,)]
    processes.start("worker", "worker", "--concurrency", "1")
    processes.start("beat", "beat")
    wait_for(
        lambda: rows(database_url, "SELECT count(*) FROM event_intake") == [(0,)],
        60,
        "beat's sweep to apply the intake",
    )
    stored = rows(
        database_url, "SELECT id, count(*) FROM events WHERE type = 'signed_up' GROUP BY id"
    )
    assert sorted(stored) == sorted((event_id, 1) for event_id in answered)
    assert rows(database_url, "SELECT count(*) FROM enrollments") == [(COUNT,)]
    # a restarted API answers a repeat with the event it applied, and applies nothing twice
    again = start_api(processes, "api-again")
    repeat = httpx.post(f"{again}/v1/events", json=signup(0), headers=EARLY, timeout=10)
    assert repeat.status_code == 200
    assert repeat.json()["event_id"] == answered[0]
    assert repeat.json()["duplicate"] is True
    signups = "SELECT count(*) FROM events WHERE type = 'signed_up'"
    assert rows(database_url, signups) == [(COUNT,)]


def test_nurture_run_on_sqlite_coalesces_and_answers_early(tmp_path: Path, smtp_sink: Sink) -> None:
    """The all-in-one `nurture run` (API in a thread, worker and beat in-process) on SQLite:
    concurrent single events are applied and answered; early answers are applied by its
    drainer."""
    write_project(tmp_path, welcome_project(WELCOME_DAY_ONE, "---\nsubject: Hi\n---\n<p>Hi</p>\n"))
    database_url = f"sqlite:///{tmp_path / '.nurture' / 'nurture.db'}"
    env = {**cluster_env(tmp_path, database_url, "filesystem://", smtp_sink.port),
           "NURTURE_API_TOKENS": TOKEN}  # fmt: skip
    processes = Cluster(tmp_path, env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        processes.start("run", "run", "--port", str(port))
        wait_for(lambda: _up(base), 60, "nurture run's API")
        plain = {"Authorization": f"Bearer {TOKEN}"}

        def post(number: int) -> httpx.Response:
            headers = EARLY if number % 2 else plain
            return httpx.post(f"{base}/v1/events", json=signup(number), headers=headers, timeout=30)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(COUNT * 2)))
        assert [a.status_code for a in answers] == [202] * (COUNT * 2)
        assert all(answers[n].json()["enrolled"] == ["welcome"] for n in range(0, COUNT * 2, 2))
        assert all(answers[n].json()["status"] == "queued" for n in range(1, COUNT * 2, 2))
        signups = "SELECT count(*) FROM events WHERE type = 'signed_up'"
        wait_for(lambda: rows(database_url, signups) == [(COUNT * 2,)], 30, "every event applied")
        assert rows(database_url, "SELECT count(*) FROM event_intake") == [(0,)]
    finally:
        processes.stop_all()
