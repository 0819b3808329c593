"""The send-time checks of SPEC §2, in their order: each finishes the step, makes it wait, or
lets it go to rendering and the provider (checks 6 and 7 belong to the shell that sends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.definitions import models
from worker.engine.state import Enrollment, Lead, StepStatus

MESSAGE_CHANNELS = frozenset({"email", "sms", "whatsapp"})
WHATSAPP_SESSION = timedelta(hours=24)


@dataclass(frozen=True)
class Switches:
    """Operator holds that are not part of any lead's state."""

    sends_paused: bool = False
    paused_sequences: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Go:
    """Render and send this content to this address now."""

    channel: str
    content: object
    address: str | None
    variant: int | None = None


@dataclass(frozen=True)
class Wait:
    """Stay pending; look again at `until` (None: held until an operator or support resumes)."""

    until: datetime | None
    why: str


@dataclass(frozen=True)
class Finish:
    status: StepStatus
    reason: str


Decision = Go | Wait | Finish


def held(
    lead: Lead,
    enrollment: Enrollment | None,
    sequence_id: str | None,
    now: datetime,
    switches: Switches,
    *,
    decided: bool = False,
) -> Decision | None:
    """Check 1: exited, or paused by support, an operator or the incident switch.

    `decided`: a reaction's crm_task or notify, made before an exit in the same event, goes
    out even though the enrollment has ended since."""
    if enrollment is not None and not enrollment.active and not decided:
        return Finish(StepStatus.SKIPPED, "exited")
    for pause in (enrollment.pause if enrollment else None, lead.pause):
        if pause is not None and pause.active(now):
            return Wait(pause.until, "paused")
    if sequence_id is not None and sequence_id in switches.paused_sequences:
        return Wait(None, "sequence_paused")
    if switches.sends_paused:
        return Wait(None, "sends_paused")
    return None


def reachable(lead: Lead, channel: str, address: str | None) -> Decision | None:
    """Check 2: suppression and consent, then an address to send to."""
    if channel not in MESSAGE_CHANNELS:
        return None
    if channel in lead.suppressions:
        return Finish(StepStatus.SKIPPED, "suppressed")
    consented = lead.consent.get(channel)
    if channel == "email" and consented is False:
        return Finish(StepStatus.SKIPPED, "suppressed")
    if channel in ("sms", "whatsapp") and consented is not True:
        return Finish(StepStatus.SKIPPED, "suppressed")
    if not address:
        return Finish(StepStatus.SKIPPED, "no_address")
    return None


def capped(lead: Lead, channel: str, caps: models.Caps, now: datetime) -> Decision | None:
    """Check 4: frequency caps over messages providers accepted, across all sequences."""
    if channel not in MESSAGE_CHANNELS:
        return None
    latest: datetime | None = None
    for cap, counts in ((getattr(caps, channel), {channel}), (caps.all, MESSAGE_CHANNELS)):
        if cap is None:
            continue
        span = cap.per.approximate()
        recent = sorted(at for at, ch in lead.sends if ch in counts and now - at < span)
        if len(recent) >= cap.max:
            free_at = recent[len(recent) - cap.max] + span
            latest = free_at if latest is None else max(latest, free_at)
    return Wait(latest, "cap") if latest is not None else None


def whatsapp_session(lead: Lead, content: object, now: datetime) -> Decision | None:
    """Check 7's WhatsApp rule: free-form text only within 24 h of the lead's last message."""
    if isinstance(content, models.WhatsappTemplate):
        return None
    last = lead.last_inbound_whatsapp_at
    if last is None or now - last >= WHATSAPP_SESSION:
        return Finish(StepStatus.SKIPPED, "whatsapp_window")
    return None
