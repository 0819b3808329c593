"""Console sessions: a cookie holding the person's name and session version, signed and
timestamped by itsdangerous with the installation's secret key. It lasts 12 hours from the
last page seen (each page renews it); a new password or role, or removal, ends it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from worker.config import Settings
from worker.kit.signing import secret

SALT = "nurture.console.session"
MAX_AGE = 12 * 3600
"""Seconds a session lasts after the last page seen."""


@dataclass(frozen=True)
class SessionCookie:
    name: str
    version: int


def _serializer(config: Settings, clock: Callable[[], float]) -> URLSafeTimedSerializer:
    class Stamped(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return URLSafeTimedSerializer(secret(config), salt=SALT, signer=Stamped)


def issue(config: Settings, name: str, version: int, clock: Callable[[], float] = time.time) -> str:
    """The cookie's value for this person and session version."""
    return str(_serializer(config, clock).dumps({"n": name, "v": version}))


def read(
    config: Settings, token: str, clock: Callable[[], float] = time.time
) -> SessionCookie | None:
    """The session a cookie holds; None when it is forged, altered or older than MAX_AGE."""
    try:
        data = _serializer(config, clock).loads(token, max_age=MAX_AGE)
    except BadData:
        return None
    if not isinstance(data, dict):
        return None
    name, version = data.get("n"), data.get("v")
    if not isinstance(name, str) or not isinstance(version, int):
        return None
    return SessionCookie(name, version)
