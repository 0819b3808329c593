"""Several `nurture beat` processes on PostgreSQL + Redis: one leads and publishes the periodic
duties, the other stands by; the leader killed with SIGKILL, the other takes over, sends go on,
no duty is published by both at once and no email arrives twice."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis as redis_client

from tests.helpers import fresh_database, write_project
from tests.library import WELCOME, unsubscribe_template, welcome_project
from tests.runtime.test_processes import post, runtime_for, statuses
from tests.servers.processes import Cluster, cluster_env, wait_for
from tests.servers.smtp import Sink
from worker.runtime.process import Runtime
from worker.store.migrate import upgrade

pytestmark = pytest.mark.integration

FILES = welcome_project(WELCOME, unsubscribe_template("Hello"))
PUBLISHED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/\w+\] Scheduler: Sending")
FAST_LEASE = {"NURTURE_BEAT_LEASE_SECONDS": "2", "NURTURE_BEAT_RENEW_SECONDS": "0.4"}


def publications(log: str) -> list[datetime]:
    """When a beat published a periodic duty, from Celery's own line for each publication."""
    found = (PUBLISHED.match(line) for line in log.splitlines())
    return [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f") for m in found if m]


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_url: str, redis_url: str, smtp_sink: Sink
) -> Iterator[tuple[Cluster, Runtime, str]]:
    write_project(tmp_path, FILES)
    database_url = fresh_database(postgres_url)
    upgrade(database_url)
    redis_client.Redis.from_url(redis_url).flushall()
    env = {**cluster_env(tmp_path, database_url, redis_url, smtp_sink.port), **FAST_LEASE}
    running = Cluster(tmp_path, env)
    try:
        yield running, runtime_for(tmp_path, database_url), database_url
    finally:
        running.stop_all()


def test_the_standby_beat_takes_over_from_a_killed_leader_and_nothing_runs_twice(
    cluster: tuple[Cluster, Runtime, str], smtp_sink: Sink
) -> None:
    processes, runtime, database_url = cluster
    processes.start("worker", "worker", "--concurrency", "2")
    processes.start("beat-a", "beat")
    wait_for(lambda: "leading now" in processes.log("beat-a"), 30, "beat-a to lead")
    processes.start("beat-b", "beat")
    wait_for(lambda: "standing by" in processes.log("beat-b"), 30, "beat-b to stand by")

    post(runtime, 10, prefix="before")
    wait_for(lambda: len(smtp_sink.messages) >= 10, 60, "10 messages from beat-a's dispatch")
    assert not publications(processes.log("beat-b")), "the standby published while a leader led"

    # steps keep falling due while the leader dies and the standby takes over
    feeding = threading.Thread(target=post, args=(runtime, 20), kwargs={"prefix": "during"})
    feeding.start()
    processes.kill("beat-a")
    feeding.join()
    wait_for(lambda: "leading now" in processes.log("beat-b"), 30, "beat-b to take over")
    post(runtime, 10, prefix="after")
    wait_for(lambda: len(smtp_sink.messages) >= 40, 60, "every message after the takeover")
    wait_for(lambda: statuses(database_url) == {"sent": 40}, 30, "40 rows sent")

    sent = smtp_sink.step_runs()
    assert len(sent) == len(set(sent)) == 40
    by_a, by_b = publications(processes.log("beat-a")), publications(processes.log("beat-b"))
    assert by_a, "beat-a published nothing while it led"
    assert by_b, "beat-b published nothing after the takeover"
    assert max(by_a) < min(by_b), "both beats published periodic duties at the same time"
