"""Every request TwilioSender can make, against Prism serving Twilio's own OpenAPI document
(../shared/tools/provider-mocks): a request that breaks Twilio's schema is refused there with
422 and a `✖` line in the mock's log."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import SecretStr

from integrations.ports import PermanentError, TextMessage
from integrations.twilio import TwilioSender
from worker.config import Settings

pytestmark = pytest.mark.integration

ACCOUNT = "AC" + "0123456789abcdef" * 2
SERVICE = "MG" + "fedcba9876543210" * 2
CONTENT = "HX" + "00112233445566778899aabbccddeeff"
PHONE = "+4915112345678"
PUBLIC_URL = "https://nurture.example.com"


def sender(mocks: Any, **settings: Any) -> TwilioSender:
    config = Settings(
        sms_backend="twilio",
        public_url=PUBLIC_URL,
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=SecretStr("test-token"),
        twilio_api_base=mocks.twilio_url,
        **settings,
    )
    return TwilioSender.from_settings(config)


def checked(mocks: Any, send: Any) -> tuple[Any, str]:
    """Run `send`, then what the mock logged about it."""
    before = len(mocks.log("twilio"))
    result = send()
    deadline = time.monotonic() + 5
    while True:
        logged = mocks.log("twilio")[before:]
        if "Responding with" in logged or "Request terminated" in logged:
            return result, logged
        if time.monotonic() > deadline:
            return result, logged
        time.sleep(0.05)


SMS = TextMessage(to=PHONE, channel="sms", body="Your trial ends tomorrow 🙂", reference="r1")
FREE_FORM = TextMessage(to=PHONE, channel="whatsapp", body="Thanks, Ana!", reference="r2")
TEMPLATE = TextMessage(
    to=PHONE,
    channel="whatsapp",
    content_sid=CONTENT,
    variables={"1": "Ana", "2": "Friday"},
    reference="r3",
)
CASES = [
    pytest.param({"twilio_from": "+15005550006"}, SMS, id="sms-from-number"),
    pytest.param({"twilio_messaging_service_sid": SERVICE}, SMS, id="sms-messaging-service"),
    pytest.param({"twilio_whatsapp_from": "+14155238886"}, FREE_FORM, id="whatsapp-free-form"),
    pytest.param(
        {"twilio_whatsapp_from": "whatsapp:+14155238886"}, TEMPLATE, id="whatsapp-template"
    ),
    pytest.param({"twilio_messaging_service_sid": SERVICE}, TEMPLATE, id="whatsapp-via-service"),
]


@pytest.mark.parametrize(("settings", "message"), CASES)
def test_every_request_the_sender_makes_passes_twilios_contract(
    mocks: Any, settings: dict[str, Any], message: TextMessage
) -> None:
    twilio = sender(mocks, **settings)
    result, logged = checked(mocks, lambda: twilio.send(message))
    assert result.provider_message_id.startswith("SM")
    assert result.segments == 1  # num_segments of Twilio's own example answer
    assert "✖" not in logged, logged
    assert "The request passed the validation rules" in logged
    assert f"/Accounts/{ACCOUNT}/Messages.json" in logged


def test_the_mock_refuses_a_request_that_breaks_the_contract(mocks: Any) -> None:
    # the control: a malformed messaging service id is what Twilio's schema forbids
    twilio = sender(mocks, twilio_messaging_service_sid="MG-not-a-sid")
    with pytest.raises(PermanentError) as refused:
        checked(mocks, lambda: twilio.send(SMS))
    assert refused.value.code == "422"
    assert refused.value.suppress is None
    logged = mocks.log("twilio")
    assert "MessagingServiceSid must match pattern" in logged
