"""The lookup that confirms `unknown` texts (TwilioSender.sent_texts: Twilio's Messages list,
filtered by To and DateSent) against Prism serving Twilio's own OpenAPI document
(../shared/tools/provider-mocks): the request passes Twilio's schema, and Twilio's own example
answer is read the way the confirmation needs it. (Prism flags its own example answer's
`…_uri` fields, which are paths, against `format: uri`: only request violations count.)"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from integrations.ports import TextMessage
from integrations.twilio import SentText
from tests.integrations.test_twilio_contract import PHONE, checked, sender

pytestmark = pytest.mark.integration

# Twilio's example page holds an outbound message sent at 17:44:50 and an inbound one
EXAMPLE_SENT = datetime(2019, 5, 24, 17, 44, 50, tzinfo=UTC)


def violations(logged: str) -> list[str]:
    return [line for line in logged.splitlines() if "✖" in line and "response.body" not in line]


def test_the_messages_list_request_passes_twilios_contract(mocks: Any) -> None:
    twilio = sender(mocks, twilio_from="+15005550006")
    since, until = datetime(2019, 5, 24, 17, 40, tzinfo=UTC), datetime(2019, 5, 24, 18, tzinfo=UTC)
    found, logged = checked(mocks, lambda: twilio.sent_texts(PHONE, since, until))
    assert violations(logged) == [], logged
    assert logged.count("Request received") == 1  # one page, never a walk through the pages
    assert "The request passed the validation rules" in logged
    assert f"get /2010-04-01/Accounts/{twilio.options.account_sid}/Messages.json" in logged
    asked = twilio.client.http_client._test_only_last_request  # what went out, query included
    assert asked.method == "GET"
    assert asked.params == {
        "To": PHONE,
        "DateSent>": "2019-05-24T00:00:00Z",  # by the day, as Twilio filters
        "DateSent<": "2019-05-25T00:00:00Z",
        "PageSize": 50,
    }
    # the example's outbound message, read as the confirmation matches it; the inbound one not
    assert found == [
        SentText(
            sid="SMded05904ccb347238880ca9264e8fe1c",
            to="+18182008801",
            body="testing",
            status="sent",
            sent_at=EXAMPLE_SENT,
            segments=1,
        )
    ]


def test_outside_the_window_nothing_is_taken_for_a_match(mocks: Any) -> None:
    twilio = sender(mocks, twilio_from="+15005550006")
    since = datetime(2019, 5, 24, 17, 45, tzinfo=UTC)  # after the example's message
    found, logged = checked(mocks, lambda: twilio.sent_texts(PHONE, since, since.replace(hour=19)))
    assert violations(logged) == [], logged
    assert found == []


def test_a_message_names_its_step_run_in_a_callback_twilio_accepts(mocks: Any) -> None:
    twilio = sender(mocks, twilio_from="+15005550006")
    message = TextMessage(to=PHONE, channel="sms", body="Hi", reference="0123456789abcdef" * 2)
    parameters = twilio.parameters(message)
    assert parameters["status_callback"] == (
        "https://nurture.example.com/v1/webhooks/twilio/status?step_run=" + "0123456789abcdef" * 2
    )
    result, logged = checked(mocks, lambda: twilio.send(message))
    assert result.provider_message_id.startswith("SM")
    assert "✖" not in logged, logged
