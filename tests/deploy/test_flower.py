"""Flower as the compose file runs it, over the stack's broker: with task events on
(NURTURE_WORKER_EVENTS), the sends and the scheduler's ticks show up in it with their state."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.deploy.stack import Stack
from tests.servers.processes import wait_for
from tests.servers.smtp import Sink

pytestmark = pytest.mark.integration


def test_flower_shows_the_workers_and_the_sends(compose_stack: Stack, deploy_sink: Sink) -> None:
    env = compose_stack.environment("flower")
    assert env["NURTURE_WORKER_EVENTS"] == "true"
    user, password = env["FLOWER_BASIC_AUTH"].split(":", 1)
    flower = httpx.Client(
        base_url=f"http://127.0.0.1:{compose_stack.port(5555)}", auth=(user, password), timeout=10
    )
    wait_for(compose_stack.ready, timeout=120, what="the API")
    compose_stack.post_event("flower@example.com")
    wait_for(
        lambda: any("flower@example.com" in str(m["To"]) for m in list(deploy_sink.messages)),
        timeout=120, what="the email at the sink",
    )  # fmt: skip
    assert httpx.get(f"{flower.base_url}/api/tasks", timeout=10).status_code == 401
    tasks: dict[str, Any] = {}

    def sends_seen() -> bool:
        tasks.clear()
        tasks.update(flower.get("/api/tasks").json())
        return any(
            t["name"] == "step.send_batch" and t["state"] == "SUCCESS" for t in tasks.values()
        )

    wait_for(sends_seen, timeout=60, what="a step.send_batch task in Flower")
    names = {t["name"] for t in tasks.values()}
    assert {"dispatch.tick", "step.send_batch"} <= names, names
    workers = flower.get("/api/workers", params={"refresh": "true"}).json()
    assert workers, "Flower sees no worker"
