"""`nurture preview`: render one step of a sequence for a sample or a given lead."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from integrations.ports import TextMessage
from worker.config import Settings
from worker.definitions import models
from worker.definitions.catalog import Catalog, SequenceDef
from worker.engine.checks import Go
from worker.engine.schedule import channel_content, step_channel
from worker.kit.clock import utcnow
from worker.kit.signing import unsubscribe_url
from worker.rendering.errors import RenderError
from worker.rendering.samples import render_preview, sample_context
from worker.sending.compose import Composed, compose
from worker.sending.email import email_message


def preview_step(catalog: Catalog, sequence_id: str, step_id: str, lead: Any) -> str:
    """Every variant of the step, rendered; raises ValueError naming what is missing."""
    definition, step = find_step(catalog, sequence_id, step_id)
    assert catalog.templates is not None
    values = sample_context(lead, sequence=sequence_id, step=step_id, now=utcnow())
    values["sequence"]["name"] = definition.model.name
    count = len(step.variants) if isinstance(step, models.VariantsStep) else 1
    parts = []
    for variant in range(count):
        channel = step_channel(step, variant)
        content = channel_content(step, variant)
        heading = f"== {sequence_id} / {step_id}"
        if count > 1:
            heading += f" / variant {chr(ord('A') + variant)}"
        parts.append(f"{heading} ({channel}) ==")
        try:
            parts.append(_render(catalog, channel, content, values))
        except RenderError as exc:
            raise ValueError(str(exc)) from exc
    return "\n".join(parts)


def find_step(catalog: Catalog, sequence_id: str, step_id: str) -> tuple[SequenceDef, Any]:
    """The sequence and its step (or `send:` reaction); ValueError naming what is missing."""
    definition = catalog.sequence(sequence_id)
    if definition is None:
        known = ", ".join(sorted(catalog.sequences)) or "none"
        raise ValueError(f"no sequence {sequence_id!r} (sequences: {known})")
    step: Any = next((s for s in definition.model.steps if s.id == step_id), None)
    step = step or definition.one_off(step_id)
    if step is None:
        known = ", ".join(s.id for s in definition.model.steps)
        raise ValueError(f"no step {step_id!r} in {sequence_id} (steps: {known})")
    return definition, step


def send_preview(
    config: Settings, catalog: Catalog, sequence_id: str, step_id: str, lead: Any, to: str
) -> list[str]:
    """`--send-to`: every variant of the step, rendered for the sample (or given) lead and sent
    to `to` through the configured provider, as the worker would send it (untracked links; the
    unsubscribe link leads nowhere). One line per message sent; ValueError for a step with
    nothing to send; the provider's TemporaryError or PermanentError as they come."""
    from worker.runtime.providers import providers

    definition, step = find_step(catalog, sequence_id, step_id)
    templates = catalog.templates
    assert templates is not None
    values = sample_context(lead, sequence=sequence_id, step=step_id, now=utcnow())
    values["sequence"]["name"] = definition.model.name
    values["unsubscribe_url"] = unsubscribe_url(config, "preview", "email")
    email_sender, text_sender, _ = providers(config)
    count = len(step.variants) if isinstance(step, models.VariantsStep) else 1
    sent = []
    for variant in range(count):
        channel, content = step_channel(step, variant), channel_content(step, variant)
        reference = f"preview-{uuid.uuid4().hex}"
        if channel == "crm_task":
            raise ValueError(f"{sequence_id} / {step_id} is a crm_task: there is nothing to send")
        try:
            composed = compose(templates, Go(channel, content, to), values)
        except RenderError as exc:
            raise ValueError(str(exc)) from exc
        composed = replace(composed, to=to)
        if composed.email is not None:
            message = email_message(config, composed, reference=reference, lead_id="preview")
            result = email_sender.send(message)
            sent.append(f"{channel} to {to}: {composed.subject} ({result.provider_message_id})")
        else:
            result = text_sender.send(
                TextMessage(
                    to=to,
                    channel=composed.channel,
                    body=composed.body,
                    content_sid=composed.content_sid,
                    variables=composed.variables,
                    reference=reference,
                )
            )
            sent.append(f"{channel} to {to} ({result.provider_message_id})")
    return sent


def _render(catalog: Catalog, channel: str, content: object, values: dict[str, Any]) -> str:
    templates = catalog.templates
    assert templates is not None
    if channel in ("email", "sms", "whatsapp") and isinstance(content, str):
        return render_preview(templates, channel, content, values)  # type: ignore[arg-type]
    composed = compose(templates, Go(channel, content, None), values)
    return _describe(composed)


def _describe(composed: Composed) -> str:
    if composed.channel == "crm_task":
        lines = [f"Task: {composed.subject}", f"Priority: {composed.priority}"]
        lines.append(f"Type: {composed.task_type}; due {composed.due_after_seconds or 0}s after")
        if composed.body:
            lines.append(composed.body)
        return "\n".join(lines)
    if composed.channel == "whatsapp":
        return f"Content SID: {composed.content_sid}\nVariables: {composed.variables}"
    email = composed.email
    assert email is not None
    return f"To: {composed.to}\nSubject: {email.subject}\n--- text ---\n{email.text}"
