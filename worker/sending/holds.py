"""Providers held after refusing our credentials (a 401 or 403), as the sending path sees them:
a step whose provider is held waits (back to pending at the hold's end, spending no attempt)
instead of failing, and other channels go on. The hold itself is a row in `switches`
(worker/store/holds.py), so every worker sees it and `GET /metrics` shows it.

The two calls the hand-over makes (worker/sending/deliver.py): `held_channels` before it, so a
held provider is not called at all, and `note_refused` when a provider refuses, so the hold
holds for every worker. Twilio also holds itself within a process (integrations/twilio.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlmodel import Session

from integrations.ports import CredentialsRefused
from worker.config import Settings
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.holds import hold_provider, provider_holds


def provider_of(config: Settings, channel: str) -> str:
    """The name of the backend that carries `channel` (the `provider` label of the metric)."""
    if channel in ("sms", "whatsapp"):
        return config.sms_backend
    if channel == "crm_task":
        return config.crm_backend
    return config.email_backend


def held_channels(
    runtime: Runtime, channels: Iterable[str], now: datetime
) -> dict[str, CredentialsRefused]:
    """The channels among `channels` whose provider is held now, each with the error to
    record for its steps: they wait until the hold ends."""
    wanted = set(channels)
    if not wanted:
        return {}
    with transaction(runtime.database) as session:
        holds = provider_holds(session)
    found: dict[str, CredentialsRefused] = {}
    for channel in wanted:
        provider = provider_of(runtime.config, channel)
        until = holds.get(provider)
        if until is not None and until > now:
            left = (until - now).total_seconds()
            found[channel] = CredentialsRefused(
                f"{provider} refused our credentials; held for {left:.0f} s more, "
                f"until {until:%H:%M:%S} UTC",
                provider=provider,
                code="held",
                retry_after=left,
            )
    return found


def note_refused(session: Session, refused: CredentialsRefused, now: datetime) -> None:
    """A provider refused our credentials: hold it for every worker until `retry_after`."""
    seconds = refused.retry_after if refused.retry_after is not None else refused.HOLD
    hold_provider(session, refused.provider, now + timedelta(seconds=seconds), now)
