"""The lead page's model on SQLite and PostgreSQL: every step of every enrollment on one
timeline, in the lead's time and the viewer's; a held or skipped step says why in words (a
frequency cap with the time it goes out, no SMS consent, a pause, the incident switch); and what
a pause or an exit would hold or end. The words themselves (reasons.py) are checked without a
database below."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.support.lead_project import ANA, lead_runtime, night_zone, post, run_due
from worker.definitions.durations import parse_duration
from worker.definitions.models import Cap, Caps
from worker.runtime.process import Runtime
from worker.support import reasons
from worker.support.lead_lines import StepLine
from worker.support.operations import hold_sends
from worker.support.service import exit_lead, pause_lead
from worker.support.timeline import lead_page, pending_effect

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    return lead_runtime(tmp_path, database_url)


def steps(runtime: Runtime, lead_id: str, viewer: str = NEW_YORK) -> dict[str, StepLine]:
    return {s.step: s for s in lead_page(runtime, lead_id, viewer).timeline}


@pytest.mark.integration
def test_a_step_held_by_a_frequency_cap_says_so_with_the_time_it_goes_out(
    runtime: Runtime,
) -> None:
    lead_id = post(runtime, "trial_started", ANA)
    run_due(runtime)  # the welcome goes; the tour, due at once, waits for the 1-a-day cap
    found = steps(runtime, lead_id)
    welcome, tour = found["welcome"], found["tour"]
    assert (welcome.state, welcome.reason) == ("sent", None)
    assert welcome.message_id is not None
    assert tour.state == "held"
    assert tour.when is not None
    assert welcome.when is not None
    assert tour.when.utc - welcome.when.utc == timedelta(days=1)
    goes_out = tour.when.utc.astimezone(ZoneInfo(BERLIN)).strftime("%a %H:%M")  # the lead's
    assert tour.reason == f"held: frequency cap, 1 email in 24 h — goes out {goes_out}"
    # each time in the lead's zone and the viewer's
    assert tour.when.lead.endswith(("CET", "CEST"))
    assert tour.when.viewer.endswith(("EST", "EDT"))
    assert tour.when.lead != tour.when.viewer


@pytest.mark.integration
def test_a_text_without_consent_is_skipped_for_that_reason(runtime: Runtime) -> None:
    lead_id = post(runtime, "trial_started", ANA)
    nudge = steps(runtime, lead_id)["nudge"]
    assert nudge.state == "scheduled"  # placed after the quiet hours, not looked at yet
    assert nudge.when is not None
    run_due(runtime, nudge.when.utc + timedelta(seconds=1))
    nudge = steps(runtime, lead_id)["nudge"]
    assert (nudge.state, nudge.code, nudge.reason) == ("skipped", "suppressed",
                                                       "skipped: no SMS consent")  # fmt: skip


@pytest.mark.integration
def test_a_pause_and_the_incident_switch_hold_the_steps_in_words(runtime: Runtime) -> None:
    lead_id = post(runtime, "trial_started", ANA)
    pause_lead(runtime, lead_id, sequence="trial", reason="asked for a week off",
               actor="user:sam")  # fmt: skip
    page = lead_page(runtime, lead_id, BERLIN)
    trial = next(e for e in page.enrollments if e.sequence == "trial")
    assert trial.paused == "paused by user:sam (asked for a week off) until resumed"
    assert {s.reason for s in trial.steps} == {f"held: {trial.paused}"}
    assert page.actions[0].action == "pause"
    hold_sends(runtime, actor="user:ada", reason="incident")
    nudge = steps(runtime, lead_id)["nudge"]
    assert (
        nudge.reason
        == "held: all sends are on hold (the incident switch) — until they are released"
    )


@pytest.mark.integration
def test_what_a_pause_or_an_exit_would_hold_or_end(runtime: Runtime) -> None:
    lead_id = post(runtime, "trial_started", {**ANA, "timezone": night_zone()})
    run_due(runtime)
    everything = pending_effect(runtime, lead_id, None)
    assert [(p.sequence, p.step) for p in everything] == [
        ("texts", "nudge"),
        ("trial", "tour"),
        ("trial", "upgrade"),
    ]  # in due order: the text after the quiet hours, the tour after the cap
    assert all(p.due_at is not None for p in everything)
    assert [p.step for p in pending_effect(runtime, lead_id, "texts")] == ["nudge"]
    page = lead_page(runtime, lead_id, BERLIN)
    assert [(s.sequence, s.step) for s in page.scheduled] == [
        (p.sequence, p.step) for p in everything
    ]
    exit_lead(runtime, lead_id, "trial", actor="user:sam")
    assert [p.step for p in pending_effect(runtime, lead_id, None)] == ["nudge"]
    trial = next(
        e for e in lead_page(runtime, lead_id, BERLIN).enrollments if e.sequence == "trial"
    )
    assert (trial.status, trial.ended_how) == ("exited", "ended by hand")
    assert {s.reason for s in trial.steps if s.state == "skipped"} == {
        "skipped: the enrollment had ended"
    }


@pytest.mark.integration
def test_the_page_shows_who_the_lead_is_and_every_enrollment(runtime: Runtime) -> None:
    lead_id = post(runtime, "trial_started", {**ANA, "consent": {"sms": True}})
    post(runtime, "cart_abandoned", {"email": ANA["email"]}, cart_token="c1")
    page = lead_page(runtime, lead_id, "Not/AZone")
    assert (page.name, page.email, page.lead_timezone, page.viewer_timezone) == (
        "Ana Lovelace", "ana@example.com", BERLIN, "UTC"
    )  # fmt: skip
    sms = next(c for c in page.consent if c.channel == "sms")
    assert (sms.granted, sms.source) == (True, "api")
    assert sms.at is not None
    found = [(e.sequence, e.key, e.status) for e in page.enrollments]
    assert found[0] == ("cart", "c1", "active")  # the newest first
    assert sorted(found[1:]) == [("texts", None, "active"), ("trial", None, "active")]
    assert [e.type for e in page.events] == ["cart_abandoned", "trial_started"]
    times = [s.when.utc for s in page.timeline if s.when]
    assert times == sorted(times)
    assert {c.id: (c.key, c.anchor) for c in page.sequences} == {
        "cart": ("cart_token", None),
        "texts": (None, None),
        "trial": (None, None),
        "webinar": (None, "starts_at"),
    }


# -- the words, without a database ------------------------------------------------------------

CAPS = Caps(email=Cap(per=parse_duration("24h"), max=2), all=Cap(per=parse_duration("7d"), max=5))


def test_a_cap_names_its_count_and_span() -> None:
    assert reasons.held("cap", "email", CAPS, "Tue 09:00") == (
        "held: frequency cap, 2 emails in 24 h — goes out Tue 09:00"
    )
    assert reasons.held("cap", "sms", CAPS, "Tue 09:00") == (
        "held: frequency cap, 5 messages in 7 d — goes out Tue 09:00"
    )
    assert reasons.held("window", "sms", CAPS, "Wed 08:00") == (
        "held: outside the sending window or quiet hours — goes out Wed 08:00"
    )


def test_skips_and_failures_in_words_and_an_unknown_code_as_it_is() -> None:
    assert reasons.skipped("suppressed", "email", suppression="bounced") == (
        "skipped: email suppressed (the address bounced)"
    )
    assert reasons.skipped("suppressed", "whatsapp") == "skipped: no WhatsApp consent"
    assert reasons.skipped("no_address", "sms") == "skipped: no phone number to send to"
    assert reasons.skipped("condition", "email", condition="only_if: lead.attributes.pro") == (
        "skipped: its condition said no (only_if: lead.attributes.pro)"
    )
    assert reasons.skipped("brand_new_reason", "email") == "skipped: brand_new_reason"
    assert reasons.failed("550") == "failed: the provider refused it for good (550)"
    assert reasons.failed("render_error") == "failed: the template could not be rendered"
    assert reasons.held("retry: 421 busy", "email", CAPS, "Tue 09:01") == (
        "retrying: 421 busy — next try Tue 09:01"
    )
    assert reasons.exit_words("pricing_page_viewed", "exited") == (
        "ended by the event pricing_page_viewed"
    )
    assert reasons.exit_words(None, "completed") == "completed"
