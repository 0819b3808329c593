"""Signed tokens for links in messages (unsubscribe, open and click tracking): itsdangerous's
Signer over the secret key, in the format of the links already sent."""

from __future__ import annotations

import hashlib
import json
import secrets
from functools import cache
from pathlib import Path

from itsdangerous import BadData, Signer, base64_decode, base64_encode
from itsdangerous.signer import HMACAlgorithm

from worker.config import Settings

MAC_BYTES = 16


def secret(config: Settings) -> bytes:
    """NURTURE_SECRET_KEY, else a key kept in the home folder (made once by `nurture run`)."""
    if config.secret_key is not None:
        return config.secret_key.get_secret_value().encode()
    return _home_secret(config.home.resolve() / "secret_key")


@cache
def _home_secret(path: Path) -> bytes:
    """Read once per process: every email signs two or three links with it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip().encode()


class _TruncatedHmac(HMACAlgorithm):
    """HMAC-SHA256 cut to its first 16 bytes: the links already sitting in people's inboxes were
    signed so (before itsdangerous did the signing), and they must keep working."""

    def __init__(self) -> None:
        super().__init__(hashlib.sha256)

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return super().get_signature(key, value)[:MAC_BYTES]


def _signer(config: Settings) -> Signer:
    # the key is used as it is ("none"): a derived key would break every link already sent
    return Signer(secret(config), key_derivation="none", algorithm=_TruncatedHmac())


def sign(config: Settings, payload: dict[str, str]) -> str:
    """`BODY.MAC`: the payload as compact JSON in URL-safe base64, and its signature."""
    body = base64_encode(json.dumps(payload, separators=(",", ":"), sort_keys=True))
    return _signer(config).sign(body).decode()


def verify(config: Settings, token: str) -> dict[str, str] | None:
    """The payload of a token this key signed, else None (tampered, truncated, foreign)."""
    try:
        body = _signer(config).unsign(token)
        data = json.loads(base64_decode(body))
    except (BadData, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unsubscribe_token(config: Settings, lead_id: str, channel: str) -> str:
    """What `/u/{token}` (and the mailto List-Unsubscribe's subject) carries."""
    return sign(config, {"l": lead_id, "c": channel})


def unsubscribe_url(config: Settings, lead_id: str, channel: str) -> str:
    token = unsubscribe_token(config, lead_id, channel)
    return f"{config.public_url.rstrip('/')}/u/{token}"
