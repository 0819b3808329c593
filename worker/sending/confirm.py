"""Confirming texts left `unknown` by asking the provider (the `texts.confirm` task).

A crash between Twilio accepting a text and the database recording it leaves the step
`unknown`, never resent (SPEC §8). Every so often, each such step of the last day is looked up
in Twilio's Messages list: messages to the lead's number sent around the hand-over, matched on
the text the step renders to. A match makes the step `sent` with Twilio's id and status;
nothing matching leaves it `unknown`. A WhatsApp content template cannot be matched on its
body (Twilio renders it): only its status callback can confirm it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from integrations.ports import DeliveryUncertain, ProviderError
from worker.engine.checks import Go
from worker.engine.runs import content, owner
from worker.kit.signing import unsubscribe_url
from worker.rendering.errors import RenderError
from worker.runtime.process import Runtime
from worker.sending.compose import compose, context
from worker.store.db import transaction
from worker.store.tables import LeadRow
from worker.store.unknown import UnknownText, recorded, unknown_texts
from worker.store.worlds import load_world
from worker.world.confirm import Confirmation, confirm_sent

log = logging.getLogger("nurture")
LOOK_BACK = timedelta(days=1)
"""Unknown texts handed over within this long are asked about; older ones stay as they are."""
BEFORE = timedelta(minutes=2)
"""Before the hand-over: the two clocks may differ a little."""
AFTER = timedelta(hours=1)
"""After the hand-over: Twilio may queue a message before it sends it."""
BATCH = 50


class Listed(Protocol):
    """A message as the provider's list shows it."""

    @property
    def sid(self) -> str: ...
    @property
    def body(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def sent_at(self) -> datetime | None: ...
    @property
    def segments(self) -> int | None: ...


@runtime_checkable
class SentTexts(Protocol):
    """A text provider that can say what it sent (TwilioSender); the outbox cannot."""

    def sent_texts(self, to: str, since: datetime, until: datetime) -> Sequence[Listed]: ...


@dataclass
class ConfirmReport:
    asked: int = 0
    confirmed: int = 0
    unmatched: int = 0
    """Asked about, and nothing the provider sent matched: left `unknown`."""
    unrenderable: int = 0
    """Their text could not be rendered again to match on: left `unknown`."""
    stopped: str | None = None
    """Why the provider could not be asked (held, unreachable): the next run asks again."""

    def summary(self) -> str:
        found = f"asked {self.asked}, confirmed {self.confirmed}, unmatched {self.unmatched}"
        if self.unrenderable:
            found += f", not renderable {self.unrenderable}"
        return f"{found}; stopped: {self.stopped}" if self.stopped else found


def confirm_unknown_texts(runtime: Runtime, now: datetime, *, limit: int = BATCH) -> ConfirmReport:
    """Ask the provider about the texts left `unknown` in the last day; confirm what matches."""
    report = ConfirmReport()
    provider = runtime.text
    if not isinstance(provider, SentTexts):
        return report
    with transaction(runtime.database) as session:
        waiting = unknown_texts(session, now - LOOK_BACK, limit)
    taken: set[str] = set()
    for each in waiting:
        expected = expected_text(runtime, each, now)
        if expected is None:
            report.unrenderable += 1
            continue
        to, body = expected
        try:
            listed = provider.sent_texts(to, each.claimed_at - BEFORE, each.claimed_at + AFTER)
        except (ProviderError, DeliveryUncertain) as exc:
            report.stopped = str(exc)
            log.warning("texts.confirm: could not ask the provider: %s", exc)
            break
        report.asked += 1
        found = _match(runtime, listed, body, each.claimed_at, taken)
        if found is None:
            report.unmatched += 1
            continue
        taken.add(found.sid)
        confirmation = Confirmation(
            step_run_id=each.step_run_id,
            provider_message_id=found.sid,
            status=found.status,
            sent_at=found.sent_at or each.claimed_at,
            to=to,
            body=body,
            segments=found.segments,
        )
        with transaction(runtime.database) as session:
            if confirm_sent(session, runtime.engine, confirmation, now) is not None:
                report.confirmed += 1
                log.info("step run %s was `unknown`: the provider has it as %s (%s); now sent",
                         each.step_run_id, found.sid, found.status)  # fmt: skip
    return report


def expected_text(runtime: Runtime, unknown: UnknownText, now: datetime) -> tuple[str, str] | None:
    """(address, body) the step rendered to at its hand-over, rendered again the way the claim
    renders it; None when that cannot be done (the enrollment has ended, a WhatsApp content
    template, a template that no longer renders)."""
    templates = runtime.catalog.templates
    if templates is None:
        return None
    with transaction(runtime.database) as session:
        lead_row = session.get(LeadRow, unknown.lead_id)
        if lead_row is None:
            return None
        loaded = load_world(session, lead_row, now)
    world = loaded.world
    run = next((r for e in world.enrollments for r in e.steps if r.id == unknown.step_run_id), None)
    run = run or next((r for r in world.actions if r.id == unknown.step_run_id), None)
    if run is None:
        return None
    engine = runtime.engine
    definition, step = engine.definition_of(world, run)
    sent = content(step, run) if step is not None else None
    address = world.lead.address(unknown.channel)
    if not isinstance(sent, str) or not address:
        return None
    enrollment = owner(world, run)
    values = context(
        engine.names(world, enrollment, run.event, unknown.claimed_at),
        sequence=enrollment.sequence_id if enrollment else "scoring",
        sequence_name=definition.model.name if definition else None,
        step=run.step_id,
        unsubscribe_url=unsubscribe_url(runtime.config, lead_row.id, unknown.channel),
        now=unknown.claimed_at,
    )
    try:
        composed = compose(templates, Go(unknown.channel, sent, address, run.variant), values)
    except RenderError:
        return None
    to = f"whatsapp:{address}" if unknown.channel == "whatsapp" else address
    return (to, composed.body) if composed.body else None


def _match(
    runtime: Runtime, listed: Sequence[Listed], body: str, handed_at: datetime, taken: set[str]
) -> Listed | None:
    """The message with that body sent nearest the hand-over and not recorded already."""
    wanted = body.strip()
    candidates = [m for m in listed if (m.body or "").strip() == wanted and m.sid not in taken]
    if not candidates:
        return None
    with transaction(runtime.database) as session:
        known = recorded(session, [m.sid for m in candidates])
    fresh = [m for m in candidates if m.sid not in known]
    if not fresh:
        return None
    return min(fresh, key=lambda m: abs(((m.sent_at or handed_at) - handed_at).total_seconds()))
