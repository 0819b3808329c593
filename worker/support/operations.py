"""What the operations page shows and does: the incident switch, each sequence (paused,
removed, how many enrollments), what is due and how late, steps by status, the steps left
`unknown`, the CRM backlog, the reply mailbox's last poll and the providers held. Holding
sends and pausing or retiring a sequence go through the same services as the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.accounts.audit import latest_action, recent_actions
from worker.crm.repository import hold_until as crm_hold_until
from worker.kit.clock import utcnow
from worker.kit.errors import InvalidInput, NotFound
from worker.runtime.process import Runtime
from worker.store import overview as queries
from worker.store.db import transaction
from worker.store.holds import provider_holds
from worker.store.overview import CrmBacklog, UnknownStep
from worker.store.polls import last_polls
from worker.store.switches import read_switches
from worker.store.tables import ActionRow, SwitchRow
from worker.support.deploy import retire
from worker.support.service import set_switch

UNKNOWN_SHOWN = 50


@dataclass(frozen=True)
class Done:
    """One audit record as the page shows it."""

    at: datetime
    actor: str
    action: str
    target: str | None
    reason: str | None


@dataclass(frozen=True)
class SendsSwitch:
    held: bool
    changed_at: datetime | None
    changed_by: str | None
    last: Done | None
    """The latest hold or release, with its reason."""


@dataclass(frozen=True)
class SequenceState:
    id: str
    name: str | None
    present: bool
    """Its file is loaded; a removed one holds its enrollments until retired."""
    paused: bool
    active: int
    last: Done | None


@dataclass(frozen=True)
class Overview:
    now: datetime
    sends: SendsSwitch
    sequences: list[SequenceState]
    due: int
    oldest_due_at: datetime | None
    steps: dict[str, int]
    unknown: list[UnknownStep]
    crm: CrmBacklog
    crm_held_until: datetime | None
    inbox_configured: bool
    inbox_polls: dict[str, datetime]
    provider_holds: dict[str, datetime]
    recent: list[Done]

    @property
    def held_providers(self) -> dict[str, datetime]:
        """The providers held now, with when each hold ends."""
        return {name: until for name, until in self.provider_holds.items() if until > self.now}

    @property
    def oldest_due_seconds(self) -> float | None:
        if self.oldest_due_at is None:
            return None
        return max(0.0, (self.now - self.oldest_due_at).total_seconds())


def _done(row: ActionRow | None) -> Done | None:
    if row is None:
        return None
    return Done(row.at, row.actor, row.action, row.target, row.reason)


def overview(runtime: Runtime, now: datetime | None = None) -> Overview:
    now = now or utcnow()
    catalog = runtime.catalog.sequences
    with transaction(runtime.database) as session:
        switches = read_switches(session)
        sends_row = session.get(SwitchRow, "sends")
        active = queries.active_enrollments(session)
        sequences = [
            SequenceState(
                id=sequence_id,
                name=catalog[sequence_id].model.name if sequence_id in catalog else None,
                present=sequence_id in catalog,
                paused=sequence_id in switches.paused_sequences,
                active=active.get(sequence_id, 0),
                last=_done(latest_action(session, f"sequence:{sequence_id}")),
            )
            for sequence_id in sorted(set(catalog) | set(active))
        ]
        due, oldest = queries.due_now(session, now)
        return Overview(
            now=now,
            sends=SendsSwitch(
                held=switches.sends_paused,
                changed_at=sends_row.changed_at if sends_row else None,
                changed_by=sends_row.changed_by if sends_row else None,
                last=_done(latest_action(session, "sends")),
            ),
            sequences=sequences,
            due=due,
            oldest_due_at=oldest,
            steps=queries.steps_by_status(session),
            unknown=queries.unknown_steps(session, UNKNOWN_SHOWN),
            crm=queries.crm_backlog(session),
            crm_held_until=crm_hold_until(session),
            inbox_configured=runtime.config.imap_host is not None,
            inbox_polls=last_polls(session),
            provider_holds=provider_holds(session),
            recent=[d for row in recent_actions(session) if (d := _done(row)) is not None],
        )


def hold_sends(runtime: Runtime, *, actor: str, reason: str) -> None:
    """The incident switch: nothing is sent until released; nothing is lost."""
    set_switch(runtime, "sends", "paused", actor=actor, reason=_required(reason))


def release_sends(runtime: Runtime, *, actor: str, reason: str | None = None) -> None:
    set_switch(runtime, "sends", "running", actor=actor, reason=reason or None)


def pause_sequence(runtime: Runtime, sequence_id: str, *, actor: str, reason: str) -> None:
    _known(runtime, sequence_id)
    set_switch(runtime, f"sequence:{sequence_id}", "paused", actor=actor,
               reason=_required(reason))  # fmt: skip


def resume_sequence(
    runtime: Runtime, sequence_id: str, *, actor: str, reason: str | None = None
) -> None:
    _known(runtime, sequence_id)
    set_switch(runtime, f"sequence:{sequence_id}", "running", actor=actor, reason=reason or None)


def retire_sequence(runtime: Runtime, sequence_id: str, *, actor: str, reason: str) -> int:
    """End the enrollments of a sequence whose file was removed; how many leads it ended."""
    _known(runtime, sequence_id)
    return retire(runtime, sequence_id, actor=actor, reason=_required(reason))


def _known(runtime: Runtime, sequence_id: str) -> None:
    if sequence_id in runtime.catalog.sequences:
        return
    with transaction(runtime.database) as session:
        if sequence_id in queries.active_enrollments(session):
            return
    raise NotFound(f"no sequence {sequence_id}")


def _required(reason: str) -> str:
    if not reason.strip():
        raise InvalidInput("reason: say why, for the others on call")
    return reason.strip()
