"""Claiming step runs to send: re-read them under their leads' locks, run the send-time checks,
render every part, and move the ones that go `queued → claimed` by compare-and-set."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from worker.engine.checks import MESSAGE_CHANNELS, Finish, Go, Switches, Wait
from worker.engine.state import Outcome, StepRun, StepStatus
from worker.kit.clock import Clock
from worker.kit.signing import unsubscribe_url
from worker.rendering.errors import RenderError
from worker.runtime.process import Runtime
from worker.sending.compose import Composed, compose, context
from worker.sending.tracking import track
from worker.store.db import transaction
from worker.store.locks import lock_leads
from worker.store.steps import leads_of, mark_claimed
from worker.store.switches import read_switches
from worker.store.tables import StepRunRow
from worker.store.worlds import Loaded, load_worlds
from worker.world.unit import finish

LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Claimed:
    step_run_id: str
    lead_id: str
    composed: Composed
    to: str | None
    since: float = field(default_factory=time.monotonic, compare=False)
    """When it was claimed (time.monotonic), for `nurture_send_duration_seconds`."""


def claim(
    runtime: Runtime, step_run_ids: list[str], clock: Clock
) -> tuple[dict[str, str], list[Claimed]]:
    """Check, render and claim every step that may go; the others are put back or finished.
    Returns what happened to those that do not go, and the claimed ones in the order they were
    checked (`in_turn`)."""
    results: dict[str, str] = {}
    ready: list[Claimed] = []
    with transaction(runtime.database) as session:
        leads = leads_of(session, step_run_ids)
        lead_rows = lock_leads(session, leads.values())
        now = clock()
        worlds = load_worlds(session, lead_rows.values(), now)
        switches = read_switches(session)
        for step_run_id in in_turn(runtime, worlds, leads, step_run_ids):
            loaded = worlds.get(leads.get(step_run_id, ""))
            checked = _check(runtime, session, loaded, step_run_id, switches, now)
            if isinstance(checked, str):
                results[step_run_id] = checked
                continue
            ready.append(checked)
            if loaded is not None and checked.composed.channel in MESSAGE_CHANNELS:
                # on its way: the caps of the lead's next step in this batch count it
                loaded.world.lead.sends.append((now, checked.composed.channel))
        lease = timedelta(seconds=runtime.config.lease_seconds)
        moved = mark_claimed(session, [each.step_run_id for each in ready], now, lease)
    claimed = []
    for each in ready:
        if each.step_run_id in moved:
            claimed.append(each)
        else:
            results[each.step_run_id] = "claimed elsewhere"
    return results, claimed


def in_turn(
    runtime: Runtime, worlds: dict[str, Loaded], leads: dict[str, str], step_run_ids: list[str]
) -> list[str]:
    """The batch in the order `nurture simulate` takes due steps: by due time, then by the
    place of the step in its lead's world (enrollments in the order they were made, steps in
    file order), so two steps of one lead due at once go in the same order in both."""
    places: dict[str, int] = {}
    for loaded in worlds.values():
        for place, run in enumerate(runtime.engine.due_runs(loaded.world)):
            places[run.id or ""] = place

    def turn(step_run_id: str) -> tuple[datetime, int]:
        loaded = worlds.get(leads.get(step_run_id, ""))
        row = loaded.run_rows.get(step_run_id) if loaded else None
        due = row.due_at if row is not None and row.due_at is not None else LATEST
        return due, places.get(step_run_id, 0)

    return sorted(step_run_ids, key=turn)


def _check(
    runtime: Runtime,
    session: Session,
    loaded: Loaded | None,
    step_run_id: str,
    switches: Switches,
    now: datetime,
) -> Claimed | str:
    row = loaded.run_rows.get(step_run_id) if loaded else None
    if loaded is None or row is None:
        # not in its lead's world: finished, or gone with an erased lead
        found = session.get(StepRunRow, step_run_id)
        return "no such step" if found is None else f"not claimable ({found.status})"
    if row.status not in ("queued", "pending"):
        return f"not claimable ({row.status})"
    if row.due_at is None or row.due_at > now:
        _release(row)
        return "not due"
    run = find_run(loaded, step_run_id)
    engine = runtime.engine
    decision = engine.check(loaded.world, run, now, switches)
    if isinstance(decision, Wait):
        engine.wait(run, decision)
        run.reason = decision.why  # shown on the lead while it waits: cap, window, paused …
        row.hold = decision.why if decision.until is None else None
        _release(row)
        finish(session, engine, loaded, Outcome(), now)
        return f"waits ({decision.why})"
    if isinstance(decision, Finish):
        outcome = engine.record_finished(loaded.world, run, decision.status, decision.reason, now)
        finish(session, engine, loaded, outcome, now)
        return f"{decision.status.value} ({decision.reason})"
    try:
        composed = _compose(runtime, loaded, run, decision, now)
    except RenderError as exc:
        reason = getattr(exc, "reason", "render_error")  # too_long for an SMS over its parts
        outcome = engine.record_finished(loaded.world, run, StepStatus.FAILED, reason, now)
        finish(session, engine, loaded, outcome, now)
        return f"failed ({reason}: {exc})"
    return Claimed(step_run_id, loaded.lead_row.id, composed, decision.address)


def find_run(loaded: Loaded, step_run_id: str) -> StepRun:
    """The step run of that id in its lead's world: an action, or a step of an enrollment."""
    for run in loaded.world.actions:
        if run.id == step_run_id:
            return run
    for enrollment in loaded.world.enrollments:
        for run in enrollment.steps:
            if run.id == step_run_id:
                return run
    raise LookupError(f"step run {step_run_id} is not in its lead's world")


def _release(row: StepRunRow) -> None:
    row.status = "pending"
    row.lease_until = None


def _compose(runtime: Runtime, loaded: Loaded, run: StepRun, go: Go, now: datetime) -> Composed:
    engine = runtime.engine
    enrollment = next((e for e in loaded.world.enrollments if run in e.steps), None)
    names = engine.names(loaded.world, enrollment, run.event, now)
    definition = runtime.catalog.sequence(enrollment.sequence_id) if enrollment else None
    values = context(
        names,
        sequence=enrollment.sequence_id if enrollment else "scoring",
        sequence_name=definition.model.name if definition else None,
        step=run.step_id,
        unsubscribe_url=unsubscribe_url(runtime.config, loaded.lead_row.id, go.channel),
        now=now,
    )
    templates = runtime.catalog.templates
    assert templates is not None
    composed = track(
        runtime.config,
        definition.model.tracking if definition else None,
        compose(templates, go, values),
        step_run_id=run.id or "",
        lead_id=loaded.lead_row.id,
    )
    if composed.channel == "crm_task" and composed.to is None:
        composed = Composed(**{**composed.__dict__, "to": loaded.world.lead.email})
    return composed
