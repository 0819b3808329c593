"""The signed `reply+TOKEN@…` address a marketing email is sent with, naming its step run, and
the step run read back from such an address when a reply arrives."""

from __future__ import annotations

import base64
import hashlib
import hmac
from email.utils import formataddr, parseaddr

from worker.config import Settings
from worker.kit.signing import secret

REPLY_TOKEN_MAC = 10


def reply_address(config: Settings, step_run_id: str, channel: str) -> str | None:
    """`reply+TOKEN@domain` for a marketing email when NURTURE_REPLY_ADDRESS is set. The token
    is lower-case base32 (mail systems may change the case of a local part) of the step run's
    id and a truncated HMAC: 48 characters with `reply+`, under the 64 a local part may have."""
    if config.reply_address is None or channel != "email":
        return None
    name, address = parseaddr(config.reply_address)
    local, _, domain = address.rpartition("@")
    try:
        run = bytes.fromhex(step_run_id)
    except ValueError:
        return None
    token = base64.b32encode(run + _mac(config, run)).decode().rstrip("=").lower()
    return formataddr((name, f"{local}+{token}@{domain}"))


def step_run_of_address(config: Settings, address: str) -> str | None:
    """The step run a reply+TOKEN address names, when its signature holds."""
    if config.reply_address is None:
        return None
    _, ours = parseaddr(config.reply_address)
    local, _, domain = ours.lower().rpartition("@")
    their_local, _, their_domain = address.lower().rpartition("@")
    if their_domain != domain or not their_local.startswith(local + "+"):
        return None
    token = their_local[len(local) + 1 :].upper()
    try:
        data = base64.b32decode(token + "=" * (-len(token) % 8))
    except ValueError:
        return None
    run, mac = data[:-REPLY_TOKEN_MAC], data[-REPLY_TOKEN_MAC:]
    if not run or not hmac.compare_digest(mac, _mac(config, run)):
        return None
    return run.hex()


def _mac(config: Settings, run: bytes) -> bytes:
    return hmac.new(secret(config), b"reply:" + run, hashlib.sha256).digest()[:REPLY_TOKEN_MAC]
