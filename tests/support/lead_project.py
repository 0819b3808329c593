"""A small project the lead page's tests share: a two-email trial under a 1-a-day email cap, a
text without consent, a keyed cart sequence and an anchored webinar; and the steps run to their
end the way the worker runs them, in process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.helpers import make_runtime
from tests.library import unsubscribe_template
from worker.ingest.intake import apply
from worker.ingest.schemas import EventIn
from worker.runtime.process import Runtime
from worker.sending.service import send_steps
from worker.store.db import transaction
from worker.store.steps import claim_due

FILES = {
    "sequences/trial.yaml": """
        name: Trial
        enroll: {on: trial_started}
        steps:
          - {id: welcome, at: 0m, email: t/welcome}
          - {id: tour, at: 0m, email: t/tour}
          - {id: upgrade, day: 5, email: t/tour}
        """,
    "sequences/texts.yaml": """
        name: Texts
        enroll: {on: trial_started}
        steps:
          - {id: nudge, at: 0m, sms: t/nudge}
        """,
    "sequences/cart.yaml": """
        name: Cart
        enroll: {on: cart_abandoned, key: event.properties.cart_token}
        steps:
          - {id: reminder, day: 2, email: t/tour}
        """,
    "sequences/webinar.yaml": """
        name: Webinar
        enroll: {on: webinar_registered}
        anchor: event.properties.starts_at
        steps:
          - {id: replay, at: 1d, email: t/tour}
        """,
    "sequences/policy.yaml": "kind: policy\ncaps: {email: {per: 1d, max: 1}}\n",
    "templates/t/welcome.html.j2": (
        '---\nsubject: "Welcome, {{ lead.first_name }}"\n---\n'
        '<p>Hi {{ lead.first_name }}, <a href="https://acme.example/start">start here</a>.</p>\n'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
    ),
    "templates/t/tour.html.j2": unsubscribe_template("The tour"),
    "templates/t/nudge.sms.j2": "Hi {{ lead.first_name }}, need a hand?",
}
ANA = {
    "email": "ana@example.com",
    "phone": "+14155550134",
    "first_name": "Ana",
    "last_name": "Lovelace",
    "external_id": "crm-42",
    "timezone": "Europe/Berlin",
}


def night_zone(now: datetime | None = None) -> str:
    """A zone where it is now about two in the morning, inside SMS quiet hours (21:00-08:00)
    for the next several hours whenever the test runs."""
    hour = (now or datetime.now(UTC)).hour
    offset = (2 - hour) % 24  # local = UTC + offset
    if offset > 14:
        offset -= 24
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/UTC"  # the Etc/GMT sign is inverted


def lead_runtime(folder: Path, database_url: str) -> Runtime:
    return make_runtime(folder, database_url, FILES)


def post(runtime: Runtime, kind: str, lead: dict[str, Any], **properties: Any) -> str:
    event = EventIn.model_validate({"type": kind, "lead": lead, "properties": properties})
    return apply(runtime, event).lead_id


def run_due(runtime: Runtime, at: datetime | None = None) -> dict[str, str]:
    """Claim what is due at `at` (a few seconds from now by default) and send it, as the
    dispatcher and a send task would."""
    when = at or datetime.now(UTC) + timedelta(seconds=5)
    with transaction(runtime.database) as session:
        due = claim_due(session, when, 100)
    return send_steps(runtime, due, lambda: when)
