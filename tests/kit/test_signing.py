"""Signed links: the ones already sitting in people's inboxes keep verifying."""

from __future__ import annotations

from pydantic import SecretStr

from worker.config import Settings
from worker.kit.signing import sign, verify

CONFIG = Settings(secret_key=SecretStr("an old secret from before the move"))
# made by the hand-written HMAC signer that itsdangerous replaced: links in inboxes look so
OLD_UNSUBSCRIBE = "eyJjIjoiZW1haWwiLCJsIjoiM2YyYTljIn0.tL96_G2IpKYN_l8CR5GoNQ"
OLD_CLICK = (
    "eyJrIjoiY2xpY2siLCJyIjoiMDEyM2FiY2QiLCJ1IjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9wcmljaW5nP2E9MSZiPTIifQ"
    ".hWtdA0eqGIBgbzWiXMVNEA"
)


def test_links_signed_before_the_move_still_verify() -> None:
    assert verify(CONFIG, OLD_UNSUBSCRIBE) == {"c": "email", "l": "3f2a9c"}
    assert verify(CONFIG, OLD_CLICK) == {
        "k": "click",
        "r": "0123abcd",
        "u": "https://example.com/pricing?a=1&b=2",
    }


def test_new_links_have_the_same_form() -> None:
    assert sign(CONFIG, {"l": "3f2a9c", "c": "email"}) == OLD_UNSUBSCRIBE


def test_a_tampered_or_foreign_token_is_refused() -> None:
    body, _, mac = OLD_UNSUBSCRIBE.partition(".")
    other = Settings(secret_key=SecretStr("somebody else's key"))
    assert verify(other, OLD_UNSUBSCRIBE) is None
    assert verify(CONFIG, body + "." + mac[:-2] + "AA") is None
    forged = body.replace("M2YyYTlj", "M2YyYTlk")  # lead 3f2a9c -> 3f2a9d
    assert forged != body
    assert verify(CONFIG, forged + "." + mac) is None
    assert verify(CONFIG, body) is None
    assert verify(CONFIG, "") is None
    assert verify(CONFIG, "not base64 at all.!!") is None
