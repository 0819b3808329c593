"""Webhooks over HTTP against a real database (SQLite and PostgreSQL): forms, Shopify and
Twilio, with signatures computed the way each sender computes them. A bad signature is a 401
that writes nothing; a repeated delivery changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr
from sqlalchemy import select, text
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.helpers import make_runtime
from tests.library import unsubscribe_template
from worker.api import webhooks
from worker.api.app import create_app
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.tables import LeadRow, MessageRow

pytestmark = pytest.mark.integration

CART = """
name: Cart
enroll: {on: checkout_started, key: "event.properties.cart_token"}
exit_on: [order_placed]
steps:
  - {id: r1, at: 1h, email: t/hello}
  - {id: r24, at: 24h, email: t/hello}
"""
FOLLOW_UP = """
name: Follow-up
enroll: {on: form_submitted}
exit_on: [replied]
steps:
  - {id: nudge, day: 2, email: t/hello}
"""
PUBLIC_URL = "https://nurture.example.com"
SHOPIFY_SECRET = "shpss_test_secret"
TWILIO_TOKEN = "twilio-auth-token"
FORM_SECRET = "form-secret"
PHONE = "+4915112345678"
NOTHING = {"leads": 0, "events": 0, "enrollments": 0, "step_runs": 0}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    found = make_runtime(
        tmp_path,
        database_url,
        {
            "sequences/cart.yaml": CART,
            "sequences/follow-up.yaml": FOLLOW_UP,
            "templates/t/hello.html.j2": unsubscribe_template("Hi"),
        },
    )
    found.config = found.config.model_copy(
        update={
            "public_url": PUBLIC_URL,
            "shopify_webhook_secret": SecretStr(SHOPIFY_SECRET),
            "twilio_auth_token": SecretStr(TWILIO_TOKEN),
        }
    )
    return found


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(lambda: runtime)
    app.include_router(webhooks.router)
    with TestClient(app) as test_client:
        yield test_client


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.database.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("leads", "events", "enrollments", "step_runs")
        }


def events(runtime: Runtime) -> list[tuple[str, dict[str, Any]]]:
    """(type, properties) of every stored event, oldest first."""
    with runtime.database.connect() as connection:
        rows = connection.execute(
            text("SELECT type, properties FROM events ORDER BY received_at, type")
        ).all()
    return [(kind, props if isinstance(props, dict) else json.loads(props)) for kind, props in rows]


def enrollments(runtime: Runtime) -> list[tuple[str, str | None, str]]:
    with runtime.database.connect() as connection:
        rows = connection.execute(
            text("SELECT sequence_id, key, status FROM enrollments ORDER BY sequence_id")
        ).all()
    return [(sequence, key, status) for sequence, key, status in rows]


def lead(runtime: Runtime, lead_id: str) -> LeadRow:
    with transaction(runtime.database) as session:
        row = session.get(LeadRow, lead_id)
        assert row is not None
        return row


# -- forms ------------------------------------------------------------------------------------


def test_a_json_form_maps_the_lead_and_keeps_the_rest_as_properties(
    client: TestClient, runtime: Runtime
) -> None:
    fields = {
        "email": "Ana@Example.com",
        "phone": PHONE,
        "first_name": "Ana",
        "timezone": "Europe/Berlin",
        "consent_sms": True,
        "consent": {"whatsapp": "yes"},
        "plan": "pro",
        "utm": {"source": "ads"},
    }
    response = client.post("/v1/webhooks/forms/signup", json=fields)
    assert response.status_code == 202
    body = response.json()
    assert list(body) == ["event_id", "lead_id", "duplicate", "enrolled", "exited"]
    assert (body["duplicate"], body["enrolled"], body["exited"]) == (False, ["follow-up"], [])
    row = lead(runtime, body["lead_id"])
    assert (row.email, row.phone, row.first_name, row.timezone) == (
        "ana@example.com", PHONE, "Ana", "Europe/Berlin",
    )  # fmt: skip
    assert {k: v["granted"] for k, v in row.consent.items()} == {"sms": True, "whatsapp": True}
    assert row.consent["sms"]["source"] == "form"
    assert events(runtime) == [
        ("form_submitted", {"plan": "pro", "utm": {"source": "ads"}, "form": "signup"})
    ]


def test_a_form_encoded_form_with_checkboxes_and_blank_fields(
    client: TestClient, runtime: Runtime
) -> None:
    body = "email=bo%40example.com&phone=&sms_opt_in=on&consent_whatsapp=no&topic=a&topic=b"
    response = client.post(
        "/v1/webhooks/forms/newsletter",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 202
    row = lead(runtime, response.json()["lead_id"])
    assert (row.email, row.phone) == ("bo@example.com", None)  # a blank field is no value
    assert {k: v["granted"] for k, v in row.consent.items()} == {"sms": True, "whatsapp": False}
    assert events(runtime) == [("form_submitted", {"topic": ["a", "b"], "form": "newsletter"})]


def test_a_delivery_header_or_an_id_field_makes_a_repeat_change_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    fields = {"email": "ana@example.com"}
    headers = {"X-Nurture-Delivery": "d-1"}
    first = client.post("/v1/webhooks/forms/signup", json=fields, headers=headers)
    again = client.post("/v1/webhooks/forms/signup", json=fields, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {**first.json(), "duplicate": True, "enrolled": []}
    by_field = {"email": "ana@example.com", "id": "sub-9"}
    assert client.post("/v1/webhooks/forms/signup", json=by_field).status_code == 202
    assert client.post("/v1/webhooks/forms/signup", json=by_field).json()["duplicate"] is True
    assert counts(runtime) == {"leads": 1, "events": 2, "enrollments": 1, "step_runs": 1}


def test_a_signed_form_is_accepted_and_a_bad_signature_writes_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    runtime.config = runtime.config.model_copy(update={"form_secret": SecretStr(FORM_SECRET)})
    body = json.dumps({"email": "ana@example.com", "plan": "pro"}).encode()
    digest = hmac.new(FORM_SECRET.encode(), body, hashlib.sha256).hexdigest()
    json_type = {"Content-Type": "application/json"}
    for signature in (None, "sha256=" + "0" * 64, "sha1=" + digest, digest):
        headers = (
            json_type if signature is None else {**json_type, "X-Nurture-Signature": signature}
        )
        refused = client.post("/v1/webhooks/forms/signup", content=body, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
    tampered = body.replace(b"pro", b"max")
    signed = {**json_type, "X-Nurture-Signature": f"sha256={digest}"}
    assert (
        client.post("/v1/webhooks/forms/signup", content=tampered, headers=signed).status_code
        == 401
    )
    assert counts(runtime) == NOTHING
    accepted = client.post("/v1/webhooks/forms/signup", content=body, headers=signed)
    assert accepted.status_code == 202
    assert counts(runtime)["events"] == 1


@pytest.mark.parametrize(
    ("content", "content_type", "status", "field"),
    [
        (b'{"email": "not-an-email"}', "application/json", 422, "email"),
        (b'{"phone": "12345"}', "application/json", 422, "phone"),
        (b'{"plan": "pro"}', "application/json", 422, "email"),
        (
            b'{"email": "a@example.com", "timezone": "Mars/Base"}',
            "application/json",
            422,
            "timezone",
        ),
        (
            b"email=a%40example.com&consent_sms=maybe",
            "application/x-www-form-urlencoded",
            422,
            "consent_sms",
        ),
        (b'{"email": "a@example.com", "id": {"x": 1}}', "application/json", 422, "id"),
        (
            b'{"email": "a@example.com", "first_name": "A\\u0000B"}',
            "application/json",
            422,
            "first_name",
        ),
        (b'{"email": "a@example.com", "score": Infinity}', "application/json", 422, "body"),
        (
            b'{"email": "a@example.com", "consent": {"fax": true}}',
            "application/json",
            422,
            "consent.fax",
        ),
        (b'{"email": ', "application/json", 422, "body"),
        (b'["email"]', "application/json", 422, "body"),
        (b"email=a@example.com", "text/plain", 415, "content-type"),
    ],
)
def test_bad_form_input_names_the_field_and_writes_nothing(
    client: TestClient,
    runtime: Runtime,
    content: bytes,
    content_type: str,
    status: int,
    field: str,
) -> None:
    response = client.post(
        "/v1/webhooks/forms/signup", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert [f["field"] for f in error["fields"]] == [field]
    assert counts(runtime) == NOTHING


def test_a_bad_form_name_or_an_oversized_body_is_refused(
    client: TestClient, runtime: Runtime
) -> None:
    bad_name = client.post("/v1/webhooks/forms/sign%20up", json={"email": "a@example.com"})
    assert bad_name.status_code == 422
    assert bad_name.json()["error"]["fields"][0]["field"] == "path.form"
    huge = {"email": "a@example.com", "notes": "x" * (1024 * 1024)}
    assert client.post("/v1/webhooks/forms/signup", json=huge).status_code == 413
    assert counts(runtime) == NOTHING


# -- Shopify ----------------------------------------------------------------------------------


def _now(minutes: int = 0) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


CUSTOMER = {"id": 7001, "email": "ana@example.com", "first_name": "Ana", "last_name": "Ito"}


def checkout(**changes: Any) -> dict[str, Any]:
    """A checkout as Shopify sends it (the fields we read, and a few we do not)."""
    return {
        "id": 35001,
        "token": "chk-1",
        "cart_token": "cart-1",
        "email": "ana@example.com",
        "phone": "0151 1234",  # typed by the shopper, not E.164: dropped, not refused
        "buyer_accepts_marketing": True,
        "created_at": _now(),
        "completed_at": None,
        "total_price": "49.00",
        "currency": "EUR",
        "abandoned_checkout_url": "https://acme.example/recover/chk-1",
        "line_items": [{"title": "Mug", "quantity": 1}, {"title": "Tea", "quantity": 2}],
        "customer": CUSTOMER,
        "presentment_currency": "EUR",
        **changes,
    }


def order(**changes: Any) -> dict[str, Any]:
    return {
        "id": 820001,
        "order_number": 1001,
        "email": "ana@example.com",
        "cart_token": "cart-1",
        "checkout_token": "chk-1",
        "created_at": _now(5),
        "total_price": "49.00",
        "currency": "EUR",
        "line_items": [{"title": "Mug"}],
        "customer": CUSTOMER,
        **changes,
    }


def shopify_signature(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    """As Shopify documents it: base64 of the HMAC-SHA256 of the raw body, keyed with the
    app's client secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify(
    client: TestClient,
    topic: str,
    payload: dict[str, Any],
    webhook_id: str,
    *,
    signature: str | None = None,
) -> Response:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Shop-Domain": "acme.myshopify.com",
        "X-Shopify-Hmac-Sha256": shopify_signature(body) if signature is None else signature,
    }
    # the test client's type comes from httpx2 when installed; at run time it is this Response
    response: Response = client.post("/v1/webhooks/shopify", content=body, headers=headers)
    return response


def test_shopify_signatures_good_tampered_and_missing(client: TestClient, runtime: Runtime) -> None:
    body = json.dumps(checkout()).encode()
    tampered = body.replace(b"49.00", b"0.01")
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": "checkouts/create",
               "X-Shopify-Webhook-Id": "w-1"}  # fmt: skip
    for content, signature in (
        (tampered, shopify_signature(body)),
        (body, shopify_signature(body, "another-secret")),
        (body, ""),
    ):
        refused = client.post(
            "/v1/webhooks/shopify",
            content=content,
            headers={**headers, "X-Shopify-Hmac-Sha256": signature},
        )
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
    assert counts(runtime) == NOTHING
    good = {**headers, "X-Shopify-Hmac-Sha256": shopify_signature(body)}
    assert client.post("/v1/webhooks/shopify", content=body, headers=good).status_code == 202
    # with no secret configured nothing can be verified: even a "signed" delivery is refused
    runtime.config = runtime.config.model_copy(update={"shopify_webhook_secret": None})
    again = {**good, "X-Shopify-Webhook-Id": "w-2"}
    assert client.post("/v1/webhooks/shopify", content=body, headers=again).status_code == 401
    assert counts(runtime)["events"] == 1


def test_a_checkout_enrolls_its_cart_and_the_order_ends_it_once(
    client: TestClient, runtime: Runtime
) -> None:
    started = shopify(client, "checkouts/create", checkout(), "w-1")
    assert started.status_code == 202
    assert started.json()["enrolled"] == ["cart"]
    assert shopify(client, "checkouts/create", checkout(), "w-1").json()["duplicate"] is True
    row = lead(runtime, started.json()["lead_id"])
    assert (row.email, row.phone, row.external_id, row.first_name) == (
        "ana@example.com", None, "shopify:7001", "Ana",
    )  # fmt: skip
    assert row.consent["email"]["granted"] is True
    [(kind, properties)] = events(runtime)
    assert kind == "checkout_started"
    assert properties == {
        "cart_token": "cart-1",
        "checkout_id": 35001,
        "checkout_token": "chk-1",
        "total_price": "49.00",
        "currency": "EUR",
        "abandoned_checkout_url": "https://acme.example/recover/chk-1",
        "line_items": ["Mug", "Tea"],
    }
    assert enrollments(runtime) == [("cart", "cart-1", "active")]

    not_yet = shopify(client, "checkouts/update", checkout(), "w-2")
    assert (not_yet.status_code, not_yet.json()) == (200, {"ignored": "checkout not completed"})

    placed = shopify(client, "orders/create", order(), "w-3")
    assert placed.status_code == 202
    assert placed.json()["exited"] == ["cart"]
    # Shopify sends the same order again under a new webhook id: still one purchase
    repeated = shopify(client, "orders/create", order(), "w-4")
    assert (repeated.status_code, repeated.json()["duplicate"]) == (200, True)
    kinds = [kind for kind, _ in events(runtime)]
    assert kinds == ["checkout_started", "order_placed"]
    assert events(runtime)[1][1]["cart_token"] == "cart-1"
    assert events(runtime)[1][1]["order_id"] == 820001
    assert enrollments(runtime) == [("cart", "cart-1", "exited")]


def test_a_completed_checkout_and_deliveries_that_change_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    done = checkout(completed_at=_now(2), order_id=820001)
    completed = shopify(client, "checkouts/update", done, "w-1")
    assert completed.status_code == 202
    assert shopify(client, "checkouts/update", done, "w-2").json()["duplicate"] is True
    assert [kind for kind, _ in events(runtime)] == ["checkout_completed"]

    nobody = checkout(email=None, phone=None, customer=None)
    ignored = shopify(client, "checkouts/create", nobody, "w-3")
    assert (ignored.status_code, ignored.json()) == (200, {"ignored": "no identity"})
    other = shopify(client, "products/update", {"id": 1, "title": "Mug"}, "w-4")
    assert (other.status_code, other.json()) == (200, {"ignored": "topic products/update"})
    assert counts(runtime)["events"] == 1


def test_a_phone_only_checkout_and_a_declined_marketing_box(
    client: TestClient, runtime: Runtime
) -> None:
    payload = checkout(email=None, customer=None, phone=PHONE, buyer_accepts_marketing=False)
    response = shopify(client, "checkouts/create", payload, "w-1")
    assert response.status_code == 202
    row = lead(runtime, response.json()["lead_id"])
    assert (row.email, row.phone, row.external_id) == (None, PHONE, None)
    assert row.consent["email"]["granted"] is False


# -- Twilio -----------------------------------------------------------------------------------


def twilio(
    client: TestClient,
    path: str,
    params: dict[str, str],
    *,
    signed_params: dict[str, str] | None = None,
    url: str | None = None,
    token: str = TWILIO_TOKEN,
) -> Response:
    """A request signed with Twilio's own RequestValidator, over the public URL."""
    full_path = f"/v1/webhooks/twilio/{path}"
    validator = RequestValidator(token)
    signature = validator.compute_signature(url or PUBLIC_URL + full_path, signed_params or params)
    response: Response = client.post(
        full_path, data=params, headers={"X-Twilio-Signature": signature}
    )
    return response


def inbound(client: TestClient, sid: str, body: str, sender: str = PHONE) -> Response:
    params = {"MessageSid": sid, "AccountSid": "AC1", "From": sender, "To": "+15005550006",
              "Body": body, "NumMedia": "0"}  # fmt: skip
    return twilio(client, "inbound", params)


def test_twilio_signatures_good_tampered_and_missing(client: TestClient, runtime: Runtime) -> None:
    params = {"MessageSid": "SM1", "From": PHONE, "Body": "hello"}
    refused = [
        twilio(client, "inbound", params, signed_params={**params, "Body": "hi"}),
        twilio(client, "inbound", params, url="https://elsewhere.example/v1/webhooks/twilio/inbound"),
        twilio(client, "inbound", params, token="another-token"),
        client.post("/v1/webhooks/twilio/inbound", data=params),
        twilio(client, "status", {"MessageSid": "SM1", "MessageStatus": "sent"},
               signed_params={"MessageSid": "SM1", "MessageStatus": "delivered"}),
    ]  # fmt: skip
    assert [r.status_code for r in refused] == [401] * 5
    assert {r.json()["error"]["code"] for r in refused} == {"unauthorized"}
    assert counts(runtime) == NOTHING
    accepted = twilio(client, "inbound", params)
    assert accepted.status_code == 200
    assert accepted.headers["content-type"].startswith("text/xml")
    assert accepted.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    runtime.config = runtime.config.model_copy(update={"twilio_auth_token": None})
    assert twilio(client, "inbound", {**params, "MessageSid": "SM2"}).status_code == 401
    assert counts(runtime)["events"] == 1


def _message(runtime: Runtime, lead_id: str, sid: str, status: str = "accepted") -> None:
    """A message the sender recorded when Twilio accepted it."""
    now = datetime.now(UTC)
    with transaction(runtime.database) as session:
        session.add(
            MessageRow(id=f"m-{sid}", step_run_id=f"run-{sid}", lead_id=lead_id, channel="sms",
                       to=PHONE, body="Your cart is waiting", provider_message_id=sid,
                       status=status, sent_at=now, updated_at=now)
        )  # fmt: skip


def _status_of(runtime: Runtime, sid: str) -> str:
    with runtime.database.connect() as connection:
        found = connection.execute(
            text("SELECT status FROM messages WHERE provider_message_id = :sid"), {"sid": sid}
        ).scalar_one()
    return str(found)


def test_status_callbacks_never_move_backwards_and_emit_once(
    client: TestClient, runtime: Runtime
) -> None:
    lead_id = client.post("/v1/webhooks/forms/signup", json={"phone": PHONE}).json()["lead_id"]
    _message(runtime, lead_id, "SM1")
    _message(runtime, lead_id, "SM2")

    def status(sid: str, value: str, **extra: str) -> dict[str, Any]:
        response = twilio(client, "status", {"MessageSid": sid, "MessageStatus": value, **extra})
        assert response.status_code == 200
        answer: dict[str, Any] = response.json()
        return answer

    assert status("SM1", "delivered") == {
        "message_sid": "SM1", "status": "delivered", "changed": True, "events": ["sms_delivered"],
    }  # fmt: skip
    # Twilio does not order its callbacks: a late `sent` and a repeated `delivered` change nothing
    assert status("SM1", "sent")["changed"] is False
    assert status("SM1", "delivered")["changed"] is False
    assert _status_of(runtime, "SM1") == "delivered"

    assert status("SM2", "sent")["events"] == []
    assert status("SM2", "undelivered", ErrorCode="30003")["events"] == ["sms_failed"]
    assert status("SM2", "failed", ErrorCode="30005")["changed"] is False
    assert _status_of(runtime, "SM2") == "undelivered"

    unknown = status("SM404", "delivered")
    assert unknown == {"message_sid": "SM404", "status": None, "changed": False, "events": []}
    found = [(kind, props) for kind, props in events(runtime) if kind != "form_submitted"]
    assert found == [
        ("sms_delivered", {"message_sid": "SM1", "channel": "sms", "status": "delivered"}),
        ("sms_failed", {"message_sid": "SM2", "channel": "sms", "status": "undelivered",
                        "error_code": "30003"}),
    ]  # fmt: skip
    missing = twilio(client, "status", {"MessageSid": "SM1"})
    assert missing.status_code == 422
    assert missing.json()["error"]["fields"][0]["field"] == "MessageStatus"


def test_racing_status_callbacks_leave_the_latest_status_and_one_event(
    client: TestClient, runtime: Runtime
) -> None:
    lead_id = client.post("/v1/webhooks/forms/signup", json={"phone": PHONE}).json()["lead_id"]
    _message(runtime, lead_id, "SM1")
    statuses = ["sent", "delivered", "sending", "delivered", "queued", "sent"] * 2
    start = threading.Barrier(len(statuses))

    def post(status: str) -> int:
        start.wait()
        params = {"MessageSid": "SM1", "MessageStatus": status}
        return twilio(client, "status", params).status_code

    with ThreadPoolExecutor(len(statuses)) as pool:
        assert set(pool.map(post, statuses)) == {200}
    assert _status_of(runtime, "SM1") == "delivered"
    assert [kind for kind, _ in events(runtime)].count("sms_delivered") == 1


def test_stop_start_help_and_a_reply(client: TestClient, runtime: Runtime) -> None:
    signup = {"phone": PHONE, "email": "ana@example.com", "consent_sms": "on"}
    form = client.post("/v1/webhooks/forms/signup", json=signup).json()
    assert form["enrolled"] == ["follow-up"]
    lead_id = form["lead_id"]

    assert inbound(client, "SM1", " Stop. ").status_code == 200
    assert lead(runtime, lead_id).suppressions == {"sms": "stop"}
    assert inbound(client, "SM1", " Stop. ").status_code == 200  # a repeated delivery
    assert inbound(client, "SM2", "start").status_code == 200
    assert lead(runtime, lead_id).suppressions == {}
    assert inbound(client, "SM3", "HELP").status_code == 200
    assert enrollments(runtime) == [("follow-up", None, "active")]

    assert inbound(client, "SM4", "Yes please, call me tomorrow").status_code == 200
    assert enrollments(runtime) == [("follow-up", None, "exited")]
    assert [kind for kind, _ in events(runtime)] == [
        "form_submitted", "unsubscribed", "resubscribed", "help_requested", "replied",
    ]  # fmt: skip
    assert events(runtime)[-1][1] == {"channel": "sms", "body": "Yes please, call me tomorrow"}
    assert lead(runtime, lead_id).last_inbound_whatsapp_at is None


def test_whatsapp_inbound_opens_the_session_and_stop_suppresses_only_whatsapp(
    client: TestClient, runtime: Runtime
) -> None:
    before = datetime.now(UTC)
    response = inbound(client, "SMw1", "Hi there", sender=f"whatsapp:{PHONE}")
    assert response.status_code == 200
    with transaction(runtime.database) as session:
        row = session.execute(select(LeadRow)).scalar_one()
    assert row.phone == PHONE
    assert row.last_inbound_whatsapp_at is not None
    assert row.last_inbound_whatsapp_at >= before
    assert inbound(client, "SMw2", "STOP", sender=f"whatsapp:{PHONE}").status_code == 200
    assert lead(runtime, row.id).suppressions == {"whatsapp": "stop"}
    assert events(runtime)[0] == ("replied", {"channel": "whatsapp", "body": "Hi there"})


def test_an_inbound_sender_that_is_not_a_phone_number_is_named(
    client: TestClient, runtime: Runtime
) -> None:
    response = inbound(client, "SM1", "hello", sender="ACME")
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "From"
    missing = twilio(client, "inbound", {"From": PHONE, "Body": "hi"})
    assert missing.json()["error"]["fields"][0]["field"] == "MessageSid"
    assert counts(runtime) == NOTHING
