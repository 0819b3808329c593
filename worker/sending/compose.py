"""Turn a step the engine let go into what a provider receives: rendered email, text or task.

One place for the template context, so `simulate`, `preview` and the worker render alike. An
SMS longer than `nurture validate` allows for the sample lead is refused here too (`TooLong`),
before any provider sees it: a real lead's data can make it longer than the sample did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.definitions import models
from worker.definitions.catalog import MAX_SMS_SEGMENTS
from worker.engine.checks import Go
from worker.kit.problems import Problem
from worker.rendering.errors import RenderError
from worker.rendering.templates import Channel, RenderedEmail, Templates
from worker.rendering.text import sms_segments


class TooLong(RenderError):
    """An SMS over MAX_SMS_SEGMENTS parts for this lead: the step fails with reason `too_long`
    (the message names the count and the limit); nothing is sent."""

    reason = "too_long"

    def __init__(self, problem: Problem, segments: int = 0, limit: int = MAX_SMS_SEGMENTS):
        super().__init__(problem)
        self.args = (problem, segments, limit)  # survives pickling whole, like RenderError
        self.segments = segments
        self.limit = limit


@dataclass(frozen=True)
class Composed:
    channel: str
    subject: str | None = None
    email: RenderedEmail | None = None
    body: str | None = None
    """SMS or free-form WhatsApp text; a crm_task's body."""
    content_sid: str | None = None
    variables: dict[str, str] | None = None
    priority: str | None = None
    task_type: str | None = None
    due_after_seconds: int | None = None
    to: str | None = None


def context(
    names: dict[str, Any],
    *,
    sequence: str | None,
    sequence_name: str | None = None,
    step: str,
    unsubscribe_url: str,
    now: datetime,
) -> dict[str, Any]:
    """The names templates see (SPEC §3): lead, event, sequence, step, unsubscribe_url, now."""
    return {
        "lead": names["lead"],
        "event": names["event"],
        "events": names.get("events", []),
        "sequence": {"id": sequence, "name": sequence_name or sequence},
        "step": {"id": step},
        "unsubscribe_url": unsubscribe_url,
        "now": now,
    }


def compose(
    templates: Templates, go: Go, values: dict[str, Any], *, derive_text: bool = True
) -> Composed:
    """Render every part before anything is sent; raises rendering.errors.RenderError."""
    content = go.content
    if go.channel == "email" and isinstance(content, str):
        email = templates.render_email(content, values, derive_text=derive_text)
        return Composed("email", subject=email.subject, email=email, to=go.address)
    if go.channel in ("sms", "whatsapp") and isinstance(content, str):
        channel: Channel = "sms" if go.channel == "sms" else "whatsapp"
        body = templates.render_text(channel, content, values)
        if channel == "sms":
            check_length(templates, content, body)
        return Composed(go.channel, body=body, to=go.address)
    if isinstance(content, models.WhatsappTemplate):
        variables = {k: templates.render_string(v, values) for k, v in content.variables.items()}
        return Composed(
            "whatsapp", content_sid=content.content_sid, variables=variables, to=go.address
        )
    if isinstance(content, models.CrmTask):
        return Composed(
            "crm_task",
            subject=templates.render_string(content.subject, values),
            body=templates.render_string(content.body, values) if content.body else None,
            priority=content.priority,
            task_type=content.type,
            due_after_seconds=int(content.due.approximate().total_seconds()) if content.due else 0,
        )
    if isinstance(content, models.Notify):
        email = templates.render_email(content.template, values, derive_text=derive_text)
        return Composed("notify", subject=email.subject, email=email, to=content.email)
    raise ValueError(f"nothing to compose for channel {go.channel!r}")


def check_length(templates: Templates, name: str, body: str) -> None:
    """Raise TooLong for an SMS body over the segment limit `nurture validate` applies."""
    count = sms_segments(body)
    if count > MAX_SMS_SEGMENTS:
        message = (
            f"too_long: {count} SMS segments for this lead; at most {MAX_SMS_SEGMENTS} "
            "are allowed: shorten the template or what it shows"
        )
        problem = Problem(templates.path("sms", name), 1, 1, message)
        raise TooLong(problem, count, MAX_SMS_SEGMENTS)
