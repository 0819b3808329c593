"""End to end over HTTP: a real `nurture api` (uvicorn) with a worker and beat on PostgreSQL and
Redis. An event's email reaches the SMTP sink; a Shopify checkout gets its reminder; the order
stops the rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

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

TOKEN = "e2e-token"
SHOPIFY_SECRET = "shpss_e2e"
CART = """
name: Cart
enroll: {on: checkout_started, key: "event.properties.cart_token"}
exit_on: [order_placed]
steps:
  - {id: nudge, at: 3s, email: w/hello}
  - {id: second, at: 20s, email: w/hello}
"""
TEMPLATE = "---\nsubject: \"Hi {{ lead.first_name | default('there') }}\"\n---\n<p>Hello</p>\n"
FILES = {**welcome_project(WELCOME_DAY_ONE, TEMPLATE), "sequences/cart.yaml": CART}


@pytest.fixture
def api(
    tmp_path: Path, postgres_url: str, redis_url: str, smtp_sink: Sink
) -> Iterator[tuple[str, str]]:
    write_project(tmp_path, FILES)
    database_url = fresh_database(postgres_url)
    upgrade(database_url)
    redis_client.Redis.from_url(redis_url).flushall()
    env = {
        **cluster_env(tmp_path, database_url, redis_url, smtp_sink.port),
        "NURTURE_API_TOKENS": TOKEN,
        "NURTURE_SHOPIFY_WEBHOOK_SECRET": SHOPIFY_SECRET,
    }
    cluster = Cluster(tmp_path, env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        # two uvicorn workers on one port, as production runs it: either may take a request
        cluster.start("api", "api", "--port", str(port), "--workers", "2")
        cluster.start("worker", "worker", "--concurrency", "2")
        cluster.start("beat", "beat")
        wait_for(lambda: _up(base), 30, "the API")
        yield base, database_url
    finally:
        cluster.stop_all()


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def shopify(base: str, topic: str, payload: dict[str, object], webhook_id: str) -> httpx.Response:
    body = json.dumps(payload).encode()
    digest = hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()
    headers = {
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id,
        "Content-Type": "application/json",
    }
    return httpx.post(f"{base}/v1/webhooks/shopify", content=body, headers=headers, timeout=10)


def test_an_event_posted_over_http_arrives_as_email(api: tuple[str, str], smtp_sink: Sink) -> None:
    base, _ = api
    event = {"id": "e2e-1", "type": "signed_up",
             "lead": {"email": "ana@example.com", "first_name": "Ana"}}  # fmt: skip
    response = httpx.post(f"{base}/v1/events", json=event,
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)  # fmt: skip
    assert response.status_code == 202
    assert response.json()["enrolled"] == ["welcome"]
    wait_for(lambda: len(smtp_sink.messages) == 1, 30, "the welcome email")
    assert smtp_sink.messages[0]["Subject"] == "Hi Ana"
    assert smtp_sink.messages[0]["To"] == "ana@example.com"


def test_a_checkout_gets_its_reminder_and_the_order_stops_the_rest(
    api: tuple[str, str], smtp_sink: Sink
) -> None:
    base, database_url = api
    now = datetime.now(UTC).isoformat()
    checkout = {"id": 901, "token": "t-901", "cart_token": "cart-901",
                "email": "bo@example.com", "created_at": now,
                "customer": {"id": 77, "first_name": "Bo"}}  # fmt: skip
    assert shopify(base, "checkouts/create", checkout, "w-1").status_code in (200, 202)
    wait_for(lambda: len(smtp_sink.messages) == 1, 60, "the first reminder")
    order = {"id": 5001, "cart_token": "cart-901", "email": "bo@example.com",
             "total_price": "42.00", "created_at": datetime.now(UTC).isoformat()}  # fmt: skip
    assert shopify(base, "orders/create", order, "w-2").status_code in (200, 202)
    assert shopify(base, "orders/create", order, "w-3").status_code in (200, 202)  # again
    engine = create_engine(database_url)
    with engine.connect() as connection:
        orders = connection.execute(
            text("SELECT count(*) FROM events WHERE type = 'order_placed'")
        ).scalar_one()
        second = connection.execute(
            text("SELECT status, reason FROM step_runs WHERE step_id = 'second'")
        ).one()
    engine.dispose()
    assert orders == 1
    assert tuple(second) == ("skipped", "exited")
    assert len(smtp_sink.messages) == 1
