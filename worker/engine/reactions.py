"""How an event acts on a lead before any enrolling: its built-in effects (whether the lead may be
contacted, its last activity) and the `on:` reactions of the sequences it is enrolled in."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.definitions import models
from worker.definitions.catalog import SequenceDef
from worker.engine import timing
from worker.engine.context import Context
from worker.engine.enrolling import enroll_by_name
from worker.engine.expressions import safe_eval
from worker.engine.lifecycle import exit_enrollment, finish, schedule
from worker.engine.pauses import pause_enrollment
from worker.engine.runs import unique
from worker.engine.schedule import step_channel
from worker.engine.state import Enrollment, Event, Lead, LeadWorld, Outcome, StepRun, StepStatus

NOT_ACTIVITY = frozenset(
    {
        "email_sent",
        "sms_sent",
        "whatsapp_sent",
        "sms_delivered",
        "sms_failed",
        "email_bounced",
        "segment_changed",
        "lead_inactive",
    }
)


def track_activity(lead: Lead, event: Event) -> None:
    if event.type in NOT_ACTIVITY:
        return
    if lead.last_activity_at is None or event.occurred_at >= lead.last_activity_at:
        lead.last_activity_at = event.occurred_at
        lead.inactive_notified = False


def apply_lead_semantics(lead: Lead, event: Event) -> None:
    """Events that change whether the lead may be contacted, wherever they come from."""
    channel = str(event.properties.get("channel") or "email")
    if event.type == "unsubscribed":
        lead.suppressions[channel] = str(event.properties.get("reason") or "unsubscribed")
    elif event.type == "resubscribed":
        lead.suppressions.pop(channel, None)
    elif event.type == "email_bounced" and event.properties.get("permanent", True):
        lead.suppressions["email"] = "bounced"
    elif event.type == "sms_failed" and event.properties.get("suppress"):
        # a provider's permanent refusal reported after the send (STOP, no such number)
        texted = str(event.properties.get("channel") or "sms")
        lead.suppressions[texted] = str(event.properties["suppress"])


def reaches(
    context: Context,
    world: LeadWorld,
    enrollment: Enrollment,
    definition: SequenceDef,
    event: Event,
    now: datetime,
) -> bool:
    """A keyed enrollment hears an event whose key is its own, or that has no key at all."""
    rule = definition.model.enroll
    if enrollment.key is None or rule is None or rule.key is None:
        return True
    key = safe_eval(rule.key, context.names(world, None, event, now))
    return key in (None, "") or str(key) == enrollment.key


def react(
    context: Context,
    world: LeadWorld,
    enrollment: Enrollment,
    definition: SequenceDef,
    reactions: list[Any],
    event: Event,
    now: datetime,
    outcome: Outcome,
) -> None:
    for index, reaction in enumerate(reactions):
        if not enrollment.active:
            return
        if isinstance(reaction, models.SendReaction):
            _one_off(context, world, enrollment, definition, reaction.send, event, now, outcome)
        elif isinstance(reaction, models.SkipReaction):
            for step_id in reaction.skip:
                run = enrollment.step(step_id)
                if run is not None and run.status is StepStatus.PENDING:
                    finish(context, world, run, StepStatus.SKIPPED, "reaction", now, outcome)
        elif isinstance(reaction, models.ExitReaction):
            exit_enrollment(enrollment, event.type, now, outcome)
        elif isinstance(reaction, models.PauseReaction):
            until = None
            if reaction.pause.for_ is not None:
                until = timing.add_duration(
                    now, reaction.pause.for_, context.schedule_tz(definition, world.lead)
                )
            pause_enrollment(
                context,
                world,
                enrollment,
                now,
                until=until,
                reason=reaction.pause.reason or event.type,
                by="reaction",
                outcome=outcome,
            )
        elif isinstance(reaction, models.EnrollReaction):
            enroll_by_name(context, world, reaction.enroll, event, now, outcome)
        else:
            channel = "crm_task" if isinstance(reaction, models.CrmTaskReaction) else "notify"
            run = StepRun(
                step_id=unique(f"on.{event.type}.{index}", enrollment.steps),
                kind="action",
                channel=channel,
                due_at=now,
                nominal_at=now,
                version=definition.version,
                event=event,
            )
            enrollment.steps.append(run)


def _one_off(
    context: Context,
    world: LeadWorld,
    enrollment: Enrollment,
    definition: SequenceDef,
    send: models.OneOffSend,
    event: Event,
    now: datetime,
    outcome: Outcome,
) -> None:
    if enrollment.step(send.id) is not None:
        return  # once per enrollment
    run = StepRun(
        step_id=send.id,
        kind="send",
        channel=step_channel(send, None),
        version=definition.version,
        event=event,
    )
    enrollment.steps.append(run)
    tz = context.schedule_tz(definition, world.lead)
    nominal = timing.add_duration(event.occurred_at, send.delay, tz)
    schedule(
        context,
        world,
        enrollment,
        definition,
        run,
        send,
        nominal,
        now,
        outcome,
        past_before=event.occurred_at,
    )
