"""CRM sync against a small stateful fake of HubSpot (and a webhook receiver), with real ingest
on a real database: 429s and 5xx storms, a 10-minute outage with 1,000 changes, batching,
validation errors, one task for a hot lead, signed webhooks, the outbox's JSON lines, and the
CRM pausing a lead."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text
from standardwebhooks import Webhook
from standardwebhooks.exceptions import WebhookVerificationError
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from integrations.crm_webhook import WebhookCrm
from integrations.hubspot import CONTACTS, HubSpotCrm
from integrations.ports import RateLimited
from tests.helpers import make_runtime
from tests.library import greeting_template
from worker.api.app import create_app
from worker.crm.service import push_pending
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due
from worker.support.view import lead_view

pytestmark = pytest.mark.integration

TOKEN = "pat-test-token"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FILES = {
    "sequences/trial.yaml": """
        name: Trial
        enroll: {on: trial_started}
        exit_on: [upgraded]
        steps:
          - {id: welcome, day: 1, email: trial/welcome}
          - {id: follow-up, day: 30, email: trial/welcome}
    """,
    "sequences/scoring.yaml": """
        kind: scoring
        points: {pricing_viewed: 10, went_quiet: -15, upgraded: 1}
        segments: {hot: 50, warm: 20}
        on_segment:
          hot:
            - crm_task: {subject: "Hot lead: call {{ lead.email }} now", priority: high, due: 1h, type: call}
    """,
    "sequences/texts.yaml": """
        name: Texts
        enroll: {on: sms_optin}
        steps:
          - {id: hello, day: 1, sms: texts/hello}
    """,
    "templates/texts/hello.sms.j2": "Hi from Nurture\n",
    "templates/trial/welcome.html.j2": greeting_template("Welcome"),
}


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class FakeHubSpot:
    """Contacts by email with every state applied to them, tasks and notes; scripted failures
    (`answers`) and an outage (`down_until`) on the test's clock."""

    clock: Clock
    contacts: dict[str, dict[str, str]] = field(default_factory=dict)
    history: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[datetime, str, int]] = field(default_factory=list)
    answers: list[httpx.Response] = field(default_factory=list)
    down_until: datetime | None = None
    refuse_domain: str = "refused.example.com"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="http://hubspot.test", transport=httpx.MockTransport(self))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        answer = self._answer(request)
        self.requests.append(
            (self.clock(), f"{request.method} {request.url.path}", answer.status_code)
        )
        return answer

    def _answer(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        if self.down_until is not None and self.clock() < self.down_until:
            return httpx.Response(503, json={"message": "Service Unavailable"})
        if self.answers:
            return self.answers.pop(0)
        body = json.loads(request.content)
        path = request.url.path
        if path == CONTACTS:
            return self._upsert(body["inputs"])
        if path == "/crm/v3/objects/tasks":
            [association] = body["associations"]
            assert association["types"][0]["associationTypeId"] == 204
            self.tasks.append(body)
            return httpx.Response(201, json={"id": f"t{len(self.tasks)}", "properties": {}})
        if path == "/crm/v3/objects/notes/batch/create":
            self.notes.extend(body["inputs"])
            return httpx.Response(201, json={"status": "COMPLETE", "results": []})
        return httpx.Response(404, json={"message": f"no route {path}"})

    def _upsert(self, inputs: list[dict[str, Any]]) -> httpx.Response:
        assert len(inputs) <= 100, "HubSpot takes up to 100 inputs per batch"
        emails = [i["id"] for i in inputs]
        assert len(set(emails)) == len(emails), "one input per contact"
        if any(e.endswith("@" + self.refuse_domain) for e in emails):
            return httpx.Response(400, json={"message": "Property values were not valid",
                                             "category": "VALIDATION_ERROR"})  # fmt: skip
        results = []
        for item in inputs:
            assert item["idProperty"] == "email"
            assert all(isinstance(v, str) for v in item["properties"].values())
            email = item["id"]
            self.contacts.setdefault(email, {}).update(item["properties"])
            self.history.setdefault(email, []).append(dict(item["properties"]))
            contact_id = self.ids.setdefault(email, str(1000 + len(self.ids)))
            results.append({"id": contact_id, "properties": {"email": email}})
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    def count(self, line: str, status: int | None = None) -> int:
        return sum(1 for _, seen, code in self.requests if seen == line and status in (None, code))


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def fake(clock: Clock) -> FakeHubSpot:
    return FakeHubSpot(clock)


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, fake: FakeHubSpot, clock: Clock) -> Runtime:
    found = make_runtime(tmp_path, database_url, FILES)
    found.crm = HubSpotCrm(TOKEN, client=fake.client(), clock=clock)
    return found


def event(runtime: Runtime, kind: str, email: str, at: datetime) -> None:
    events(runtime, [(kind, email)], at)


def events(runtime: Runtime, items: list[tuple[str, str]], at: datetime) -> None:
    """Ingest events, as the API does, in one transaction (a batch arriving at once)."""
    with transaction(runtime.database) as session:
        for kind, email in items:
            payload = {"type": kind, "lead": {"email": email}, "occurred_at": at.isoformat()}
            ingest(session, runtime.engine, EventIn.model_validate(payload), at)


def outbox(runtime: Runtime) -> list[tuple[str, str, int]]:
    with runtime.database.connect() as connection:
        rows = connection.execute(text("SELECT kind, status, attempts FROM crm_outbox ORDER BY id"))
        return [(r[0], r[1], r[2]) for r in rows]


def lead_state(runtime: Runtime, email: str) -> dict[str, str]:
    with runtime.database.connect() as connection:
        found = connection.execute(
            text("SELECT crm_state FROM leads WHERE email = :email"), {"email": email}
        ).scalar_one()
    return json.loads(found) if isinstance(found, str) else dict(found)


def push(runtime: Runtime, clock: Clock) -> Any:
    return push_pending(runtime.database, runtime.crm, clock())


def test_a_429_waits_for_retry_after_then_succeeds(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    event(runtime, "trial_started", "ana@example.com", clock())
    fake.answers.append(httpx.Response(429, headers={"Retry-After": "30"}, json={}))
    first = push(runtime, clock)
    assert (first.pushed, first.deferred) == (0, 1)
    assert first.held_until == clock() + timedelta(seconds=30)
    clock.advance(29)
    assert push(runtime, clock).pushed == 0
    assert len(fake.requests) == 1  # nothing tried before Retry-After ran out
    clock.advance(1)
    assert push(runtime, clock).pushed == 1
    contact = fake.contacts["ana@example.com"]
    assert contact["nurture_sequences"] == "trial"
    assert contact["nurture_status"] == "active"
    assert outbox(runtime) == [("enrolled", "pushed", 2)]


def test_the_pusher_keeps_to_the_policy_rate_and_a_booked_account_waits_for_the_next_tick(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    for number in range(3):
        event(runtime, "trial_started", f"lead{number}@example.com", clock())
    paced: list[str] = []

    def booked() -> None:
        paced.append("asked")
        raise RateLimited("crm booked", code="rate_limit", retry_after=12.0)

    held = push_pending(runtime.database, runtime.crm, clock(), pace=booked)
    assert (held.pushed, paced, fake.requests) == (0, ["asked"], [])  # nothing went out
    assert {status for _, status, _ in outbox(runtime)} == {"pending"}
    went = push_pending(runtime.database, runtime.crm, clock(), contacts=1,
                        pace=lambda: paced.append("waited"))  # fmt: skip
    assert went.pushed == 3
    # a wait for the rate before every batch (one contact each), and the round that found none
    assert paced == ["asked", "waited", "waited", "waited", "waited"]
    assert fake.count(f"POST {CONTACTS}") == 3


def test_a_5xx_storm_backs_off_longer_each_time_and_loses_nothing(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    event(runtime, "trial_started", "ana@example.com", clock())
    event(runtime, "pricing_viewed", "ana@example.com", clock())
    fake.answers.extend(httpx.Response(code, json={}) for code in [500, 502, 503, 504, 503, 500])
    while not fake.contacts and clock() < clock.now + timedelta(hours=1):
        push(runtime, clock)
        clock.advance(1)
    tried = [at for at, line, _ in fake.requests if line == f"POST {CONTACTS}"]
    assert len(tried) == 7  # six failures, then the success
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(tried)]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert gaps[0] <= 7, gaps  # 5 s, 10 s … 160 s, each ±20 %
    assert gaps[-1] >= 128, gaps
    assert fake.contacts["ana@example.com"]["nurture_score"] == "10"
    assert [status for _, status, _ in outbox(runtime)] == ["pushed", "pushed"]


def test_a_ten_minute_outage_with_1000_changes_loses_nothing_and_keeps_order(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    people = [f"p{i}@example.com" for i in range(40)]
    points = dict.fromkeys(people, 0)
    start = clock()
    fake.down_until = start + timedelta(minutes=10)
    chance = random.Random(6)
    events(runtime, [("trial_started", email) for email in people], clock())
    # 1,000 score changes over the 10 minutes, the pusher ticking every 5 s all along
    for tick in range(120):
        arriving = [chance.choice(people) for _ in range(8 if tick < 40 else 9)]
        events(runtime, [("pricing_viewed", email) for email in arriving], clock())
        for email in arriving:
            points[email] += 10
        push(runtime, clock)
        clock.advance(5)
    assert clock() >= fake.down_until
    during = len(fake.requests)
    assert fake.contacts == {}
    while clock() < fake.down_until + timedelta(minutes=10):
        push(runtime, clock)
        clock.advance(5)
    kinds = [kind for kind, _, _ in outbox(runtime)]
    assert kinds.count("score_changed") == sum(1 for p in points.values() for _ in range(p // 10))
    assert len(kinds) >= 1000
    assert {status for _, status, _ in outbox(runtime)} == {"pushed"}  # nothing lost
    for email in people:
        contact = fake.contacts[email]
        assert contact["nurture_score"] == str(points[email])  # its latest state
        assert contact == {**lead_state(runtime, email), "email": email}
        seen = [int(state["nurture_score"]) for state in fake.history[email]]
        assert seen == sorted(seen)  # never an older state after a newer one
    failed, applied = during, fake.count(f"POST {CONTACTS}", 200)
    # the outage cost a probe per backoff step (5 s … 5 min), not one per tick or change
    assert failed <= 12, failed
    # the backlog went out batched: each contact's first delivery, then the rest
    assert applied <= 3, applied
    print(f"\noutage: {failed} failed requests; after: {applied} upserts for {len(kinds)} changes")


def test_a_validation_error_is_recorded_and_not_retried(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    event(runtime, "trial_started", "ana@example.com", clock())
    event(runtime, "trial_started", "bad@refused.example.com", clock())
    report = push(runtime, clock)
    assert (report.pushed, report.failed, report.deferred) == (1, 1, 0)
    assert "ana@example.com" in fake.contacts
    with runtime.database.connect() as connection:
        [error] = connection.execute(
            text("SELECT last_error FROM crm_outbox WHERE status = 'failed'")
        ).scalars()
    assert "VALIDATION_ERROR" in error or "not valid" in error
    before = len(fake.requests)
    for _ in range(5):
        clock.advance(600)
        push(runtime, clock)
    assert len(fake.requests) == before  # recorded, never retried


def test_a_hot_lead_swinging_around_the_line_gets_exactly_one_task(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    email = "ana@example.com"
    # 50 hot → 35 warm → 55 hot again → 40 → 60: the line crossed three times upwards
    for kind in ["pricing_viewed"] * 5 + ["went_quiet", "pricing_viewed", "pricing_viewed",
                                          "went_quiet", "pricing_viewed", "pricing_viewed"]:  # fmt: skip
        event(runtime, kind, email, clock())
        send_due(runtime, clock)
        clock.advance(60)
    assert len(fake.tasks) == 1
    [task] = fake.tasks
    assert task["properties"]["hs_task_subject"] == f"Hot lead: call {email} now"
    assert task["properties"]["hs_task_priority"] == "HIGH"
    assert task["properties"]["hs_task_type"] == "CALL"
    assert task["associations"][0]["to"]["id"] == fake.ids[email]
    push(runtime, clock)
    assert fake.contacts[email]["nurture_segment"] == "hot"
    assert fake.contacts[email]["nurture_score"] == "60"
    segments = [s["nurture_segment"] for s in fake.history[email] if "nurture_segment" in s]
    assert segments[-1] == "hot"


def send_due(runtime: Runtime, clock: Clock) -> None:
    with transaction(runtime.database) as session:
        due = claim_due(session, clock(), 100)
    for step_run_id in due:
        send_step(runtime, step_run_id, clock)


def test_sent_messages_become_notes_and_their_status_reaches_the_contact(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    assert isinstance(runtime.crm, HubSpotCrm)
    runtime.crm.notes = True
    event(runtime, "trial_started", "ana@example.com", clock())
    send_due(runtime, clock)
    push(runtime, clock)
    contact = fake.contacts["ana@example.com"]
    assert contact["nurture_last_message"] == "trial/welcome"
    assert contact["nurture_last_message_channel"] == "email"
    assert contact["nurture_last_message_status"] == "accepted"
    assert contact["nurture_step"] == "trial/welcome"
    [note] = fake.notes
    assert (
        note["properties"]["hs_note_body"] == "Nurture sent email “Welcome there” (trial/welcome)"
    )
    assert note["associations"][0]["types"][0]["associationTypeId"] == 202
    assert fake.count(f"POST {CONTACTS}") == 1  # enrolled and sent: one upsert


def test_a_delivery_status_callback_reaches_the_contact(
    runtime: Runtime, fake: FakeHubSpot, clock: Clock
) -> None:
    runtime.config = runtime.config.model_copy(
        update={"twilio_auth_token": SecretStr("twilio-token"), "public_url": "http://testserver"}
    )
    tomorrow = clock() + timedelta(days=1)
    clock.now = tomorrow.replace(hour=12, minute=0)  # SMS keeps quiet at night
    lead = {"email": "ana@example.com", "phone": "+4915112345678", "consent": {"sms": True}}
    payload = {"type": "sms_optin", "lead": lead, "occurred_at": clock().isoformat()}
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, EventIn.model_validate(payload), clock())
    send_due(runtime, clock)
    push(runtime, clock)
    assert fake.contacts["ana@example.com"]["nurture_last_message_status"] == "accepted"
    with runtime.database.connect() as connection:
        sid = connection.execute(text("SELECT provider_message_id FROM messages")).scalar_one()
    params = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": "AC1"}
    url = "http://testserver/v1/webhooks/twilio/status"
    signature = RequestValidator("twilio-token").compute_signature(url, params)
    client = TestClient(create_app(lambda: runtime))
    answer = client.post(
        "/v1/webhooks/twilio/status", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert answer.json()["changed"] is True
    clock.advance(1)
    push(runtime, clock)
    contact = fake.contacts["ana@example.com"]
    assert contact["nurture_last_message"] == "texts/hello"
    assert contact["nurture_last_message_channel"] == "sms"
    assert contact["nurture_last_message_status"] == "delivered"
    kinds = [kind for kind, _, _ in outbox(runtime)]
    assert kinds == ["enrolled", "step_sent", "completed", "message_status"]


# -- the webhook CRM and the outbox --------------------------------------------------------------


@dataclass
class Receiver:
    """A CRM listening for webhooks: verifies each, keeps what arrived; `answers` first."""

    deliveries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = Webhook(SECRET).verify(request.content, dict(request.headers))
        self.deliveries.append((request.headers["webhook-id"], body))
        return httpx.Response(self.answers.pop(0) if self.answers else 204)


def test_the_webhook_crm_signs_every_post_and_a_retry_keeps_its_id(
    tmp_path: Path, clock: Clock
) -> None:
    runtime = make_runtime(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", FILES)
    receiver = Receiver(answers=[503])
    runtime.crm = WebhookCrm(
        "http://crm.test/hook", SECRET, client=httpx.Client(transport=httpx.MockTransport(receiver))
    )
    event(runtime, "trial_started", "ana@example.com", clock())
    event(runtime, "pricing_viewed", "ana@example.com", clock())
    push(runtime, clock)  # 503
    event(runtime, "upgraded", "ana@example.com", clock())  # waits behind the retry
    clock.advance(60)
    push(runtime, clock)
    [(first_id, first), (retry_id, retried), (next_id, later)] = receiver.deliveries
    assert retry_id == first_id  # the same message, signed anew
    assert retried == first
    assert next_id != first_id
    assert first["type"] == "nurture.crm.changes"
    assert [c["type"] for c in first["data"]["changes"]] == ["enrolled", "score_changed"]
    assert [c["type"] for c in later["data"]["changes"]] == ["exited", "score_changed"]
    exited = later["data"]["changes"][0]
    assert exited["data"]["reason"] == "upgraded"
    assert exited["contact"]["nurture_status"] == "exited"
    assert exited["lead"]["email"] == "ana@example.com"
    # a receiver with another secret, or a body changed on the way, refuses it
    signed = {"webhook-id": "x", "webhook-timestamp": str(int(datetime.now(UTC).timestamp()))}
    signed["webhook-signature"] = Webhook(SECRET).sign("x", datetime.now(UTC), '{"a":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify('{"a":2}', signed)


def test_the_outbox_backend_writes_the_same_changes_as_json_lines(
    tmp_path: Path, clock: Clock
) -> None:
    runtime = make_runtime(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", FILES)
    event(runtime, "trial_started", "ana@example.com", clock())
    event(runtime, "pricing_viewed", "ana@example.com", clock())
    assert push(runtime, clock).pushed == 2
    lines = (tmp_path / "outbox" / "crm" / "changes.jsonl").read_text().splitlines()
    changes = [json.loads(line) for line in lines]
    assert [c["type"] for c in changes] == ["enrolled", "score_changed"]
    assert set(changes[0]) == {"id", "type", "delivery", "at", "lead", "data", "contact"}
    assert changes[1]["data"] == {"from": "0", "to": "10"}
    assert changes[1]["contact"]["nurture_score"] == "10"
    assert push(runtime, clock).pushed == 0  # each change once
    event(runtime, "unsubscribed", "ana@example.com", clock())
    push(runtime, clock)
    lines = (tmp_path / "outbox" / "crm" / "changes.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["type"] == "suppressed"
    assert last["data"] == {"channel": "email", "reason": "unsubscribed"}
    assert last["contact"]["nurture_unsubscribed"] == "true"
    assert last["contact"]["nurture_suppressions"] == "email:unsubscribed"


# -- the CRM talking back ------------------------------------------------------------------------


def signed(body: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    data = json.dumps(body)
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": f"msg_{now.timestamp()}",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(f"msg_{now.timestamp()}", now, data),
    }
    return data.encode(), headers


def test_the_crm_pauses_resumes_and_exits_a_lead(tmp_path: Path, clock: Clock) -> None:
    runtime = make_runtime(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", FILES)
    update = {"crm_webhook_secret": SecretStr(SECRET), "api_tokens": "support-token"}
    runtime.config = runtime.config.model_copy(update=update)
    event(runtime, "trial_started", "ana@example.com", datetime.now(UTC))
    client = TestClient(create_app(lambda: runtime))
    post: Callable[..., httpx.Response] = client.post

    content, headers = signed({"email": "ana@example.com", "action": "pause", "reason": "call"})
    answer = post("/v1/webhooks/crm", content=content, headers=headers)
    assert answer.status_code == 200, answer.text
    lead_id = answer.json()["lead_id"]
    assert answer.json()["changed"] == [{"action": "pause", "sequence": None, "reason": "call"}]
    assert lead_view(runtime, lead_id)["enrollments"][0]["paused"] is True
    assert lead_state(runtime, "ana@example.com")["nurture_status"] == "paused"

    # a bad signature, or none, is a 401 that changes nothing
    content, headers = signed({"email": "ana@example.com", "action": "resume"}, "whsec_" + "A" * 32)
    assert post("/v1/webhooks/crm", content=content, headers=headers).status_code == 401
    assert (
        post("/v1/webhooks/crm", json={"email": "ana@example.com", "action": "resume"}).status_code
        == 401
    )
    assert lead_view(runtime, lead_id)["enrollments"][0]["paused"] is True

    # or an API token: resume, then exit every sequence
    auth = {"Authorization": "Bearer support-token"}
    answer = post("/v1/webhooks/crm", json={"lead_id": lead_id, "action": "resume"}, headers=auth)
    assert answer.status_code == 200
    assert lead_view(runtime, lead_id)["enrollments"][0]["paused"] is False
    answer = post(
        "/v1/webhooks/crm", json={"email": "ANA@example.com", "action": "exit"}, headers=auth
    )
    assert answer.json()["changed"] == [{"action": "exit", "sequence": "trial", "reason": "crm"}]
    assert lead_view(runtime, lead_id)["enrollments"][0]["status"] == "exited"

    assert (
        post(
            "/v1/webhooks/crm", json={"email": "nobody@example.com", "action": "exit"}, headers=auth
        ).status_code
        == 404
    )
    invalid = post(
        "/v1/webhooks/crm", json={"email": "ana@example.com", "action": "fly"}, headers=auth
    )
    assert invalid.status_code == 422
    assert invalid.json()["error"]["fields"][0]["field"] == "action"
    kinds = [kind for kind, _, _ in outbox(runtime)]
    # the lead resumes, and with it its enrollment: the timeline, as support sees it
    assert kinds == ["enrolled", "paused", "resumed", "resumed", "exited"]
