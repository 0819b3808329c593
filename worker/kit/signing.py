"""Signed tokens for links in messages (unsubscribe): HMAC-SHA256 with the secret key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from functools import cache
from pathlib import Path

from worker.config import Settings


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(config: Settings, payload: dict[str, str]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(secret(config), body.encode(), hashlib.sha256).digest()[:16]
    return f"{body}.{_b64(mac)}"


def verify(config: Settings, token: str) -> dict[str, str] | None:
    body, _, mac = token.partition(".")
    expected = hmac.new(secret(config), body.encode(), hashlib.sha256).digest()[:16]
    try:
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        data = json.loads(_unb64(body))
    except (ValueError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def unsubscribe_token(config: Settings, lead_id: str, channel: str) -> str:
    """What `/u/{token}` (and the mailto List-Unsubscribe's subject) carries."""
    return sign(config, {"l": lead_id, "c": channel})


def unsubscribe_url(config: Settings, lead_id: str, channel: str) -> str:
    token = unsubscribe_token(config, lead_id, channel)
    return f"{config.public_url.rstrip('/')}/u/{token}"
