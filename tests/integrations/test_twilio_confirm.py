"""Texts left `unknown` (Twilio took the message, the answer was lost) confirmed without ever
being resent: by a late status callback naming the step run, and by asking Twilio's Messages
list. Against a small fake of Twilio that keeps the messages it accepted and lists them the way
Twilio does (filtered by To and by the day sent)."""

from __future__ import annotations

import email.utils
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.integrations.test_twilio import (
    ACCOUNT,
    API_TOKEN,
    OTHER_PHONE,
    PHONE,
    PUBLIC_URL,
    SMS_FROM,
    TOKEN,
    dispatch,
    messages,
    post,
    steps,
    twilio_runtime,
)
from worker.api.app import create_app
from worker.runtime.process import Runtime
from worker.sending.confirm import confirm_unknown_texts
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import sweep
from worker.store.tables import StepRunRow

pytestmark = pytest.mark.integration

BODY = "Hi Ana, your trial ends soon. STOP to opt out"


@dataclass
class Stored:
    sid: str
    to: str
    body: str
    sent_at: datetime
    status: str = "delivered"
    direction: str = "outbound-api"

    def resource(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": ACCOUNT,
            "to": self.to,
            "from": SMS_FROM if self.direction != "inbound" else self.to,
            "body": self.body,
            "status": self.status,
            "direction": self.direction,
            "num_segments": "1",
            "date_sent": email.utils.format_datetime(self.sent_at),
            "date_created": email.utils.format_datetime(self.sent_at),
        }


@dataclass
class ListingTwilio:
    """Twilio's Messages API, create and list. `lose`: how many coming creates Twilio accepts
    and then drops the answer of (the crash `unknown` comes from); `refuse`: how many it never
    takes at all (the connection dropped before Twilio kept anything)."""

    url: str = ""
    created: list[dict[str, str]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    stored: list[Stored] = field(default_factory=list)
    lose: int = 0
    refuse: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, request: dict[str, str]) -> tuple[int, str]:
        with self.lock:
            self.created.append(request)
            if self.refuse:
                self.refuse -= 1
                return 0, ""
            message = Stored("SM" + uuid.uuid4().hex, request["To"], request.get("Body", ""),
                             datetime.now(UTC), status="queued")  # fmt: skip
            self.stored.append(message)
            if self.lose:
                self.lose -= 1
                return 0, ""
        return 201, json.dumps(message.resource())

    def list(self, query: dict[str, str]) -> tuple[int, str]:
        self.queries.append(query)
        first = _day(query.get("DateSent>"))
        last = _day(query.get("DateSent<"))
        found = [
            m.resource()
            for m in self.stored
            if m.to == query.get("To")
            and (first is None or m.sent_at.date() >= first)
            and (last is None or m.sent_at.date() <= last)
        ]
        page = {"messages": found, "next_page_uri": None, "page": 0, "page_size": 50,
                "first_page_uri": "/", "previous_page_uri": None, "uri": "/"}  # fmt: skip
        return 200, json.dumps(page)


def _day(value: str | None) -> date | None:
    """Twilio filters DateSent by the day (YYYY-MM-DD, or a timestamp's date)."""
    return date.fromisoformat(value[:10]) if value else None


@pytest.fixture
def twilio() -> Iterator[ListingTwilio]:
    found = ListingTwilio()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(*found.create(dict(parse_qsl(self.rfile.read(length).decode()))))

        def do_GET(self) -> None:
            self._answer(*found.list(dict(parse_qsl(urlsplit(self.path).query))))

        def _answer(self, status: int, body: str) -> None:
            if status == 0:
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def runtime(tmp_path: Path, twilio: ListingTwilio, database_url: str) -> Runtime:
    return twilio_runtime(tmp_path, database_url, twilio.url)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(lambda: runtime)) as test_client:
        yield test_client


def left_unknown(runtime: Runtime, now: datetime, phone: str = PHONE) -> str:
    """A text Twilio took whose answer was lost, swept `unknown` ten minutes later."""
    post(runtime, "signed_up", now, phone=phone)
    [step] = dispatch(runtime, now)
    said = send_step(runtime, step, clock=lambda: now)
    assert said.startswith("error (no answer from Twilio after sending"), said
    with transaction(runtime.database) as session:
        assert sweep(session, now + timedelta(minutes=11)).unknown == 1
    return step


def runs(runtime: Runtime) -> dict[str, StepRunRow]:
    with transaction(runtime.database) as session:
        return {row.id: row for row in session.execute(select(StepRunRow)).scalars()}


def callback(
    client: TestClient, params: dict[str, str], query: str, signed_query: str | None = None
) -> Any:
    """A status callback to `...status?{query}`, signed by Twilio over the URL it was given."""
    signed = f"{PUBLIC_URL}/v1/webhooks/twilio/status?{signed_query or query}"
    signature = RequestValidator(TOKEN).compute_signature(signed, params)
    return client.post(
        f"/v1/webhooks/twilio/status?{query}",
        data=params,
        headers={"X-Twilio-Signature": signature},
    )


def shown(client: TestClient, lead_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/leads/{lead_id}", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_a_late_status_callback_naming_an_unknown_step_confirms_it_sent(
    runtime: Runtime, twilio: ListingTwilio, client: TestClient
) -> None:
    now = datetime.now(UTC)
    twilio.lose = 1
    step = left_unknown(runtime, now)
    [request] = twilio.created
    assert request["StatusCallback"] == f"{PUBLIC_URL}/v1/webhooks/twilio/status?step_run={step}"
    [taken] = twilio.stored
    params = {"MessageSid": taken.sid, "MessageStatus": "delivered", "AccountSid": ACCOUNT,
              "To": PHONE, "From": SMS_FROM}  # fmt: skip

    forged = callback(client, params, f"step_run={step}", signed_query="step_run=other")
    assert forged.status_code == 401  # Twilio signs the URL it was given, the step run with it
    elsewhere = callback(client, {**params, "To": OTHER_PHONE}, f"step_run={step}")
    assert elsewhere.json() == {"message_sid": taken.sid, "status": None, "changed": False,
                                "events": []}  # fmt: skip
    assert steps(runtime)["texts/first"].status == "unknown"

    answer = callback(client, params, f"step_run={step}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"message_sid": taken.sid, "status": "delivered", "changed": True,
                             "events": ["sms_delivered"]}  # fmt: skip
    row = steps(runtime)["texts/first"]
    assert (row.status, row.reason, row.provider_message_id) == ("sent", None, taken.sid)
    assert row.sent_at == now
    [message] = messages(runtime)
    assert (message.provider_message_id, message.status, message.to) == (
        taken.sid, "delivered", PHONE,
    )  # fmt: skip
    lead = shown(client, row.lead_id)
    [first] = [s for e in lead["enrollments"] for s in e["steps"] if s["step"] == "first"]
    assert (first["status"], first["reason"]) == ("sent", None)
    assert [m["status"] for m in lead["messages"]] == ["delivered"]
    assert {"sms_sent", "sms_delivered"} <= {e["type"] for e in lead["events"]}

    again = callback(client, params, f"step_run={step}")  # Twilio repeats itself
    assert again.json()["changed"] is False
    assert len(messages(runtime)) == 1
    assert dispatch(runtime, now + timedelta(hours=1)) == []
    assert len(twilio.created) == 1  # never resent


def test_asking_twilio_confirms_what_it_sent_and_leaves_the_rest_unknown(
    runtime: Runtime, twilio: ListingTwilio
) -> None:
    now = datetime.now(UTC)
    # the same text to the other number three hours ago: outside the step's time, not its send
    twilio.stored.append(Stored("SM" + "0" * 32, OTHER_PHONE, BODY, now - timedelta(hours=3)))
    # and another text to it just after the hand-over, from elsewhere: not this step's body
    code = Stored("SM" + "1" * 32, OTHER_PHONE, "Your code is 123456", now + timedelta(minutes=1))
    twilio.stored.append(code)
    twilio.lose = 1
    taken = left_unknown(runtime, now)
    twilio.refuse = 1
    lost = left_unknown(runtime, now, phone=OTHER_PHONE)
    assert len(twilio.created) == 2

    later = now + timedelta(minutes=12)
    report = confirm_unknown_texts(runtime, later)
    assert (report.asked, report.confirmed, report.unmatched) == (2, 1, 1)
    rows = runs(runtime)
    [sent] = [m for m in twilio.stored if m.to == PHONE]
    assert (rows[taken].status, rows[taken].provider_message_id) == ("sent", sent.sid)
    assert rows[taken].sent_at == sent.sent_at.replace(microsecond=0)
    assert rows[lost].status == "unknown"
    [message] = messages(runtime)
    assert (message.step_run_id, message.provider_message_id, message.status, message.body) == (
        taken, sent.sid, "queued", BODY,
    )  # fmt: skip
    # Twilio was asked by number and by day sent, nothing else
    assert {q["To"] for q in twilio.queries} == {PHONE, OTHER_PHONE}
    for query in twilio.queries:
        assert query["DateSent>"].startswith(now.date().isoformat())
        assert "DateSent<" in query

    again = confirm_unknown_texts(runtime, later + timedelta(minutes=10))
    assert (again.asked, again.confirmed, again.unmatched) == (1, 0, 1)
    assert runs(runtime)[lost].status == "unknown"
    assert len(messages(runtime)) == 1
    assert lost not in dispatch(runtime, later + timedelta(days=2))
    assert len(twilio.created) == 2  # neither was ever sent again
    assert confirm_unknown_texts(runtime, now + timedelta(days=2)).asked == 0  # a day, then no more
