"""Turn a step the engine let go into what a provider receives: rendered email, text or task.

One place for the template context, so `simulate`, `preview` and the worker render alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.definitions import models
from worker.engine.checks import Go
from worker.rendering.templates import Channel, RenderedEmail, Templates


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
