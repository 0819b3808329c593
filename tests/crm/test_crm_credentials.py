"""The CRM refusing our token (a 401 or 403): not retried every few seconds but held for 15
minutes (the whole-CRM hold), then probed once; logged at ERROR and shown as
`nurture_provider_held`; nothing lost, and sends go on meanwhile. Against the stateful fake of
HubSpot of test_crm_sync.py, and a webhook receiver that refuses."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from integrations.crm_webhook import WebhookCrm
from integrations.hubspot import CONTACTS
from tests.crm import test_crm_sync
from tests.crm.test_crm_sync import FILES, SECRET, Clock, FakeHubSpot, event, outbox, push
from tests.helpers import make_runtime
from worker.api.app import create_app
from worker.crm.service import PushReport, push_pending
from worker.runtime.process import Runtime
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due

pytestmark = pytest.mark.integration
# the fixtures: the test's clock, the fake HubSpot, a runtime whose CRM is that fake
clock, fake, runtime = test_crm_sync.clock, test_crm_sync.fake, test_crm_sync.runtime

REFUSED = {
    401: {"status": "error", "message": "Authentication credentials not found.",
          "category": "INVALID_AUTHENTICATION"},
    403: {"status": "error", "message": "This app hasn't been granted all required scopes.",
          "category": "MISSING_SCOPES"},
}  # fmt: skip


def held(runtime: Runtime, provider: str) -> float | None:
    with TestClient(create_app(lambda: runtime)) as client:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(f'nurture_provider_held{{provider="{provider}"}} '):
                return float(line.split()[-1])
    return None


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_holds_the_crm_for_15_minutes_and_loses_nothing(
    runtime: Runtime,
    fake: FakeHubSpot,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    start = clock()
    event(runtime, "trial_started", "ana@example.com", start)
    event(runtime, "pricing_viewed", "ana@example.com", start)
    assert held(runtime, "hubspot") is None
    fake.answers.append(httpx.Response(status, json=REFUSED[status]))
    with caplog.at_level(logging.ERROR, logger="nurture"):
        refused = push(runtime, clock)
    assert (refused.pushed, refused.deferred, refused.failed) == (0, 2, 0)
    assert refused.refused_by == "hubspot"
    assert refused.held_until == start + timedelta(minutes=15)
    assert outbox(runtime) == [("enrolled", "pending", 1), ("score_changed", "pending", 1)]
    [alert] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "the CRM (hubspot) refused our credentials" in alert.getMessage()
    assert "NURTURE_HUBSPOT_TOKEN" in alert.getMessage()
    assert held(runtime, "hubspot") == 1.0

    # a push every 5 s for the next 15 minutes asks HubSpot nothing; sends go on meanwhile
    [welcome] = _due(runtime, clock())
    assert send_step(runtime, welcome, clock=clock) == "sent"
    while clock() < start + timedelta(minutes=15) - timedelta(seconds=5):
        clock.advance(5)
        assert push(runtime, clock).held_until == start + timedelta(minutes=15)
    assert len(fake.requests) == 1
    event(runtime, "pricing_viewed", "ana@example.com", clock())  # more changes queue up

    # the token was fixed: one probe, and everything goes out in order
    clock.advance(10)
    went = push(runtime, clock)
    kinds = [kind for kind, _, _ in outbox(runtime)]
    assert kinds[:2] == ["enrolled", "score_changed"]
    assert "step_sent" in kinds  # the email sent while the CRM was held
    assert (went.pushed, went.refused_by) == (len(kinds), None)
    assert {status for _, status, _ in outbox(runtime)} == {"pushed"}
    assert fake.count(f"POST {CONTACTS}", 200) <= 2  # the held delivery, then the rest
    assert fake.contacts["ana@example.com"]["nurture_score"] == "20"


def test_a_token_still_refused_at_the_probe_holds_it_again(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    event(runtime, "trial_started", "ana@example.com", clock())
    fake.answers += [httpx.Response(401, json=REFUSED[401]) for _ in range(2)]
    push(runtime, clock)
    clock.advance(15 * 60)
    again = push(runtime, clock)
    assert again.refused_by == "hubspot"
    assert again.held_until == clock() + timedelta(minutes=15)
    assert len(fake.requests) == 2  # one probe per hold, however long the token stays wrong
    assert outbox(runtime) == [("enrolled", "pending", 2)]


def test_the_webhook_crm_refusing_its_credentials_is_held_by_its_own_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    runtime = make_runtime(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", FILES)
    seen: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(403, text="forbidden")

    client = httpx.Client(transport=httpx.MockTransport(receiver))
    runtime.crm = WebhookCrm("http://crm.test/hook", SECRET, client=client)
    event(runtime, "trial_started", "ana@example.com", now)
    with caplog.at_level(logging.ERROR, logger="nurture"):
        report = push_at(runtime, now)
    assert (report.refused_by, report.deferred) == ("webhook", 1)
    assert held(runtime, "webhook") == 1.0
    assert held(runtime, "hubspot") is None
    assert push_at(runtime, now + timedelta(minutes=5)).pushed == 0
    assert len(seen) == 1
    assert any("the CRM (webhook) refused" in r.getMessage() for r in caplog.records)


def push_at(runtime: Runtime, now: datetime) -> PushReport:
    return push_pending(runtime.database, runtime.crm, now)


def _due(runtime: Runtime, now: datetime) -> list[str]:
    with transaction(runtime.database) as session:
        return claim_due(session, now, 10)
