"""Timelines worked out by hand, run through the engine on the simulator's virtual clock.

Calendar notes: 2026-11-20 is a Friday, 2026-11-22 a Sunday. Europe/Berlin is UTC+1 in
November and UTC+2 until the end of summer time on 2026-10-25 at 03:00 local.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from tests.helpers import CatalogFactory, lead, sends, timeline, utc
from tests.library import EMAIL
from worker.authoring.simulate import Simulation, timeline_order
from worker.definitions.catalog import Catalog, load_catalog
from worker.engine.checks import Finish, Go, Switches, Wait
from worker.engine.core import Engine
from worker.engine.state import Event, LeadWorld, StepStatus
from worker.kit.problems import Problem

BERLIN = "Europe/Berlin"


def load_catalog_from(root: Path, files: dict[str, str]) -> tuple[Catalog, list[Problem]]:
    (root / "sequences").mkdir()
    for name, text in files.items():
        (root / "sequences" / f"{name}.yaml").write_text(textwrap.dedent(text))
    for name in "abcd":
        path = root / "templates" / "t" / f"{name}.html.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(EMAIL)
    return load_catalog(root / "sequences", root / "templates")


def test_weekday_window_moves_a_sunday_step_to_monday_nine_local(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            window: {days: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}
            steps:
              - {id: one, day: 1, email: t/a}
              - {id: three, day: 3, email: t/b}
            """
        }
    )
    # Friday 10:00 Berlin; Day 3 is Sunday 10:00, outside the window: Monday 09:00 Berlin.
    entries = timeline(
        catalog,
        lead(timezone=BERLIN),
        [("signed_up", "2026-11-20T09:00:00Z", {})],
        start="2026-11-20T09:00:00Z",
    )
    assert sends(entries) == [
        ("2026-11-20T09:00", "one", "send"),
        ("2026-11-23T08:00", "three", "send"),
    ]


def test_day_two_keeps_the_wall_clock_time_across_the_end_of_summer_time(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - {id: one, day: 1, email: t/a}
              - {id: two, day: 2, email: t/b}
              - {id: later, at: 24h, email: t/c}
            """
        }
    )
    # Saturday 10:00 CEST (08:00Z). Day 2 is Sunday 10:00 CET (09:00Z); 24h later is 09:00 CET.
    entries = timeline(
        catalog,
        lead(timezone=BERLIN),
        [("signed_up", "2026-10-24T08:00:00Z", {})],
        start="2026-10-24T08:00:00Z",
    )
    assert sends(entries) == [
        ("2026-10-24T08:00", "one", "send"),
        ("2026-10-25T08:00", "later", "send"),
        ("2026-10-25T09:00", "two", "send"),
    ]


CART = """
name: Cart
enroll: {on: checkout_started, key: "event.properties.cart_token", reenroll: after_exit}
exit_on: [order_placed, unsubscribed]
steps:
  - {id: r1, at: 1h, email: t/a}
  - {id: r24, at: 24h, email: t/b}
"""


def test_two_carts_are_kept_apart_and_an_order_ends_only_its_own(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog({"cart": CART})
    entries = timeline(
        catalog,
        lead(),
        [
            ("checkout_started", "2026-11-20T10:00:00Z", {"cart_token": "c1"}),
            ("checkout_started", "2026-11-20T10:10:00Z", {"cart_token": "c2"}),
            ("order_placed", "2026-11-20T12:00:00Z", {"cart_token": "c1"}),
        ],
        start="2026-11-20T10:00:00Z",
    )
    assert sends(entries) == [
        ("2026-11-20T11:00", "r1", "send"),
        ("2026-11-20T11:10", "r1", "send"),
        ("2026-11-21T10:10", "r24", "send"),
    ]
    exits = [e for e in entries if e.action == "exit"]
    assert [(e.at, e.reason) for e in exits] == [(utc("2026-11-20T12:00:00Z"), "order_placed")]


def test_an_event_without_the_key_reaches_every_keyed_enrollment(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog({"cart": CART})
    entries = timeline(
        catalog,
        lead(),
        [
            ("checkout_started", "2026-11-20T10:00:00Z", {"cart_token": "c1"}),
            ("checkout_started", "2026-11-20T10:10:00Z", {"cart_token": "c2"}),
            ("unsubscribed", "2026-11-20T10:30:00Z", {}),
        ],
        start="2026-11-20T10:00:00Z",
    )
    assert sends(entries) == []
    assert [e.action for e in entries].count("exit") == 2


def test_an_sms_due_at_half_past_nine_in_the_evening_waits_for_eight(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - {id: text, at: 30m, sms: t/a}
            """
        }
    )
    # 21:00 in New York (EST, UTC-5) on 19 November; due 21:30, quiet until 08:00 local.
    who = lead(timezone="America/New_York", phone="+12125550123", consent={"sms": True})
    entries = timeline(
        catalog, who, [("signed_up", "2026-11-20T02:00:00Z", {})], start="2026-11-20T02:00:00Z"
    )
    assert sends(entries) == [("2026-11-20T13:00", "text", "send")]


def test_quiet_hours_come_from_the_policy(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - {id: text, day: 1, sms: t/a}
            """,
            "policy": """
            kind: policy
            quiet_hours: {sms: "20:00-09:30"}
            """,
        }
    )
    who = lead(timezone="UTC", phone="+12125550123", consent={"sms": True})
    entries = timeline(
        catalog, who, [("signed_up", "2026-11-20T20:15:00Z", {})], start="2026-11-20T20:15:00Z"
    )
    assert sends(entries) == [("2026-11-21T09:30", "text", "send")]


def test_sms_without_consent_or_phone_is_skipped_with_a_reason(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - {id: text, day: 1, sms: t/a}
              - {id: mail, day: 2, email: t/a}
            """
        }
    )
    start = "2026-11-20T12:00:00Z"
    no_consent = timeline(
        catalog, lead(phone="+12125550123"), [("signed_up", start, {})], start=start
    )
    no_phone = timeline(
        catalog, lead(consent={"sms": True}), [("signed_up", start, {})], start=start
    )
    opted_out = timeline(
        catalog, lead(consent={"email": False}), [("signed_up", start, {})], start=start
    )
    assert [(e.step, e.reason) for e in no_consent if e.action == "skip"] == [
        ("text", "suppressed")
    ]
    assert [(e.step, e.reason) for e in no_phone if e.action == "skip"] == [("text", "no_address")]
    assert ("mail", "suppressed") in [(e.step, e.reason) for e in opted_out]


def test_after_counts_from_when_the_previous_step_finished(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            window: {hours: "09:00-17:00"}
            steps:
              - {id: one, day: 1, email: t/a}
              - {id: two, after: 2h, email: t/b}
            """
        }
    )
    # Day 1 at 20:00Z waits for 09:00; `two` counts 2h from that send: 11:00.
    entries = timeline(
        catalog,
        lead(),
        [("signed_up", "2026-11-20T20:00:00Z", {})],
        start="2026-11-20T20:00:00Z",
    )
    assert sends(entries) == [
        ("2026-11-21T09:00", "one", "send"),
        ("2026-11-21T11:00", "two", "send"),
    ]


WEBINAR = """
name: Webinar
enroll: {on: webinar_registered}
anchor: "event.properties.starts_at"
steps:
  - {id: day-before, at: -24h, email: t/a}
  - {id: hour-before, at: -1h, email: t/b}
  - {id: replay, at: 1d, email: t/c}
"""


def test_negative_offsets_count_back_from_the_anchor_and_past_ones_are_skipped(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog({"webinar": WEBINAR})
    starts = {"starts_at": "2026-11-25T17:00:00Z"}
    early = timeline(
        catalog,
        lead(),
        [("webinar_registered", "2026-11-20T10:00:00Z", starts)],
        start="2026-11-20T10:00:00Z",
    )
    late = timeline(
        catalog,
        lead(),
        [("webinar_registered", "2026-11-25T08:00:00Z", starts)],
        start="2026-11-25T08:00:00Z",
    )
    assert sends(early) == [
        ("2026-11-24T17:00", "day-before", "send"),
        ("2026-11-25T16:00", "hour-before", "send"),
        ("2026-11-26T17:00", "replay", "send"),
    ]
    assert [(e.step, e.reason) for e in late if e.action == "skip"] == [("day-before", "past")]
    assert [s[1] for s in sends(late)] == ["hour-before", "replay"]


def test_a_window_that_pushes_a_reminder_past_its_anchor_skips_it(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {"webinar": WEBINAR.replace("steps:", 'window: {hours: "09:00-12:00"}\nsteps:')}
    )
    starts = {"starts_at": "2026-11-25T08:30:00Z"}
    entries = timeline(
        catalog,
        lead(),
        [("webinar_registered", "2026-11-20T10:00:00Z", starts)],
        start="2026-11-20T10:00:00Z",
    )
    # -1h is 07:30, the window opens at 09:00: after the webinar began.
    assert ("hour-before", "window") in [(e.step, e.reason) for e in entries]


def test_an_exit_is_final_and_never_reenrolls_by_default(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            exit_on: [purchased]
            steps:
              - {id: one, day: 1, email: t/a}
              - {id: two, day: 2, email: t/b}
            """
        }
    )
    entries = timeline(
        catalog,
        lead(),
        [
            ("signed_up", "2026-11-20T10:00:00Z", {}),
            ("purchased", "2026-11-20T11:00:00Z", {}),
            ("signed_up", "2026-11-20T12:00:00Z", {}),
        ],
        start="2026-11-20T10:00:00Z",
    )
    assert sends(entries) == [("2026-11-20T10:00", "one", "send")]
    assert [e.action for e in entries if e.step is None] == ["enroll", "exit"]


def test_reenroll_after_exit_starts_again(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up, reenroll: after_exit}
            exit_on: [purchased]
            steps:
              - {id: one, day: 1, email: t/a}
              - {id: two, day: 2, email: t/b}
            """
        }
    )
    entries = timeline(
        catalog,
        lead(),
        [
            ("signed_up", "2026-11-20T10:00:00Z", {}),
            ("signed_up", "2026-11-20T10:30:00Z", {}),  # active: ignored
            ("purchased", "2026-11-20T11:00:00Z", {}),
            ("signed_up", "2026-11-20T12:00:00Z", {}),
        ],
        start="2026-11-20T10:00:00Z",
    )
    assert sends(entries) == [
        ("2026-11-20T10:00", "one", "send"),
        ("2026-11-20T12:00", "one", "send"),
        ("2026-11-21T12:00", "two", "send"),
    ]


def test_reactions_send_once_skip_and_the_enrolling_event_does_not_react(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: [signed_up, pricing_page_viewed]}
            steps:
              - {id: one, day: 1, email: t/a}
              - {id: five, day: 5, email: t/b}
            on:
              pricing_page_viewed:
                - send: {id: pricing, email: t/c, delay: 1h}
                - skip: [five]
            """
        }
    )
    entries = timeline(
        catalog,
        lead(),
        [
            ("pricing_page_viewed", "2026-11-20T10:00:00Z", {}),  # enrolls, does not react
            ("pricing_page_viewed", "2026-11-21T10:00:00Z", {}),
            ("pricing_page_viewed", "2026-11-22T10:00:00Z", {}),  # once per enrollment
        ],
        start="2026-11-20T10:00:00Z",
    )
    assert sends(entries) == [
        ("2026-11-20T10:00", "one", "send"),
        ("2026-11-21T11:00", "pricing", "send"),
    ]
    assert ("five", "reaction") in [(e.step, e.reason) for e in entries]


def test_conditions_see_events_since_enrollment(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: trial_started, if: "lead.attributes.plan != 'enterprise'"}
            steps:
              - {id: one, day: 1, email: t/a}
              - {id: tour, day: 3, email: t/b, skip_if: "'feature_used' in events"}
            """
        }
    )
    events: list[tuple[str, str, dict[str, object]]] = [
        ("trial_started", "2026-11-20T10:00:00Z", {}),
        ("feature_used", "2026-11-21T10:00:00Z", {}),
    ]
    used = timeline(catalog, lead(), events, start="2026-11-20T10:00:00Z")
    enterprise = timeline(
        catalog, lead(attributes={"plan": "enterprise"}), events, start="2026-11-20T10:00:00Z"
    )
    assert ("tour", "condition") in [(e.step, e.reason) for e in used]
    assert enterprise == []


def test_frequency_caps_hold_the_third_email_of_the_day(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "a": """
            name: A
            enroll: {on: signed_up}
            steps:
              - {id: a1, day: 1, email: t/a}
              - {id: a2, at: 1h, email: t/b}
            """,
            "b": """
            name: B
            enroll: {on: signed_up}
            steps:
              - {id: b1, at: 2h, email: t/c}
              - {id: b2, at: 3h, crm_task: {subject: "Call"}}
            """,
            "policy": """
            kind: policy
            caps: {email: {per: 1d, max: 2}}
            """,
        }
    )
    entries = timeline(
        catalog, lead(), [("signed_up", "2026-11-20T10:00:00Z", {})], start="2026-11-20T10:00:00Z"
    )
    assert sends(entries) == [
        ("2026-11-20T10:00", "a1", "send"),
        ("2026-11-20T11:00", "a2", "send"),
        ("2026-11-20T13:00", "b2", "crm_task"),  # tasks are exempt
        ("2026-11-21T10:00", "b1", "send"),  # 24h after the first counted email
    ]


SCORING = """
kind: scoring
points: {pricing_page_viewed: 30, webinar_attended: 25, email_bounced: -20}
segments: {hot: 50, warm: 20, cold: 0}
on_segment:
  hot:
    - crm_task: {subject: "Hot lead: call {{ lead.first_name }} now", priority: high, due: 1h}
"""


def test_a_hot_lead_gets_one_crm_task_even_when_the_score_swings(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog({"scoring": SCORING})
    entries = timeline(
        catalog,
        lead(first_name="Ana"),
        [
            ("pricing_page_viewed", "2026-11-20T10:00:00Z", {}),  # 30 warm
            ("webinar_attended", "2026-11-20T11:00:00Z", {}),  # 55 hot: task
            ("email_bounced", "2026-11-20T12:00:00Z", {}),  # 35: still hot (above 20)
            ("webinar_attended", "2026-11-20T13:00:00Z", {}),  # 60: no second task
        ],
        start="2026-11-20T10:00:00Z",
    )
    tasks = [e for e in entries if e.action == "crm_task"]
    assert [(e.sequence, e.subject) for e in tasks] == [("scoring", "Hot lead: call Ana now")]


def test_segment_changes_are_emitted_and_can_enroll(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "scoring": SCORING + "  warm:\n    - enroll: nurture\n",
            "nurture": """
            name: Nurture
            steps:
              - {id: n1, day: 1, email: t/a}
            """,
        }
    )
    entries = timeline(
        catalog,
        lead(),
        [("pricing_page_viewed", "2026-11-20T10:00:00Z", {})],
        start="2026-11-20T10:00:00Z",
    )
    assert sends(entries) == [("2026-11-20T10:00", "n1", "send")]


def test_pause_with_an_end_moves_the_steps_and_resumes_by_itself(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - {id: one, day: 1, email: t/a}
              - {id: three, day: 3, email: t/b}
            on:
              out_of_office:
                - pause: {for: 2d}
            """
        }
    )
    entries = timeline(
        catalog,
        lead(),
        [("signed_up", "2026-11-20T10:00:00Z", {}), ("out_of_office", "2026-11-21T10:00:00Z", {})],
        start="2026-11-20T10:00:00Z",
    )
    assert sends(entries) == [
        ("2026-11-20T10:00", "one", "send"),
        ("2026-11-24T10:00", "three", "send"),
    ]
    assert [(e.action, e.at) for e in entries if e.action in ("pause", "resume")] == [
        ("pause", utc("2026-11-21T10:00:00Z")),
        ("resume", utc("2026-11-23T10:00:00Z")),
    ]


def _world_after(catalog_events: list[tuple[str, str]], engine: Engine) -> LeadWorld:
    world = LeadWorld(lead())
    for kind, at in catalog_events:
        engine.apply_event(world, Event(kind, utc(at)), utc(at))
    return world


def test_support_pause_holds_and_resume_shifts_except_anchored_steps(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - {id: three, day: 3, email: t/a}
            """,
            "webinar": WEBINAR,
        }
    )
    engine = Engine(catalog)
    world = LeadWorld(lead())
    t0 = utc("2026-11-20T10:00:00Z")
    engine.apply_event(world, Event("signed_up", t0), t0)
    starts = {"starts_at": "2026-11-30T17:00:00Z"}
    engine.apply_event(world, Event("webinar_registered", t0, starts), t0)
    paused_at = t0 + timedelta(days=1)
    engine.pause(world, paused_at, reason="asked for a break", by="support")
    step = world.enrollments[0].steps[0]
    assert isinstance(engine.check(world, step, utc("2026-11-22T10:00:00Z"), Switches()), Wait)
    engine.resume(world, paused_at + timedelta(days=4))
    assert step.due_at == utc("2026-11-26T10:00:00Z")  # Day 3 moved by the 4 days paused
    replay = world.enrollments[1].step("replay")
    assert replay is not None
    assert replay.due_at == utc("2026-12-01T17:00:00Z")  # anchored: not moved


def test_a_lead_pause_holds_enrollments_made_while_it_lasts(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {"s": "name: S\nenroll: {on: signed_up}\nsteps:\n  - {id: one, day: 1, email: t/a}\n"}
    )
    engine = Engine(catalog)
    world = LeadWorld(lead())
    t0 = utc("2026-11-20T10:00:00Z")
    engine.pause(world, t0, reason="vip")
    engine.apply_event(world, Event("signed_up", t0), t0)
    run = world.enrollments[0].steps[0]
    assert isinstance(engine.check(world, run, t0, Switches()), Wait)
    engine.apply_event(world, Event("unsubscribed", t0 + timedelta(hours=1)), t0)
    engine.resume(world, t0 + timedelta(hours=2))
    decision = engine.check(world, run, t0 + timedelta(hours=2), Switches())
    assert isinstance(decision, Finish)
    assert decision.reason == "suppressed"


def test_a_late_webhook_makes_steps_due_at_once_but_never_before_enrollment(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - {id: soon, at: 1h, email: t/a}
              - {id: later, at: 1d, email: t/b}
            """
        }
    )
    engine = Engine(catalog)
    world = LeadWorld(lead())
    occurred = utc("2026-11-20T10:00:00Z")
    arrived = occurred + timedelta(hours=3)
    engine.apply_event(world, Event("signed_up", occurred), arrived)
    soon = world.enrollments[0].step("soon")
    assert soon is not None
    assert soon.status is StepStatus.PENDING
    assert soon.due_at is not None
    assert soon.due_at <= arrived  # due at once


def test_incident_switch_and_sequence_pause_hold_without_losing(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {"s": "name: S\nenroll: {on: signed_up}\nsteps:\n  - {id: one, day: 1, email: t/a}\n"}
    )
    engine = Engine(catalog)
    t0 = utc("2026-11-20T10:00:00Z")
    world = _world_after([("signed_up", "2026-11-20T10:00:00Z")], engine)
    run = world.enrollments[0].steps[0]
    held = engine.check(world, run, t0, Switches(sends_paused=True))
    assert isinstance(held, Wait)
    assert held.until is None
    assert isinstance(
        engine.check(world, run, t0, Switches(paused_sequences=frozenset({"s"}))), Wait
    )
    assert isinstance(engine.check(world, run, t0, Switches()), Go)


def test_whatsapp_free_form_needs_a_session(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - {id: wa, day: 1, whatsapp: t/a}
            """
        },
        templates={"t/a.whatsapp.j2": "Hi"},
    )
    engine = Engine(catalog)
    world = LeadWorld(lead(phone="+12125550123", consent={"whatsapp": True}))
    t0 = utc("2026-11-20T15:00:00Z")
    engine.apply_event(world, Event("signed_up", t0), t0)
    run = world.enrollments[0].steps[0]
    decision = engine.check(world, run, t0, Switches())
    assert isinstance(decision, Finish)
    assert decision.reason == "whatsapp_window"
    world.lead.last_inbound_whatsapp_at = t0 - timedelta(hours=2)
    assert isinstance(engine.check(world, run, t0, Switches()), Go)


def test_variants_are_sticky_per_lead(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: signed_up}
            steps:
              - id: ab
                day: 1
                variants:
                  - {email: t/a, weight: 1}
                  - {email: t/b, weight: 1}
            """
        }
    )
    engine = Engine(catalog)
    chosen = set()
    for number in range(40):
        world = LeadWorld(lead(id=f"lead-{number}"))
        again = LeadWorld(lead(id=f"lead-{number}"))
        t0 = utc("2026-11-20T10:00:00Z")
        engine.apply_event(world, Event("signed_up", t0), t0)
        engine.apply_event(again, Event("signed_up", t0), t0)
        variant = world.enrollments[0].steps[0].variant
        assert variant == again.enrollments[0].steps[0].variant
        chosen.add(variant)
    assert chosen == {0, 1}


def test_lead_inactive_is_emitted_once_per_quiet_spell(make_catalog: CatalogFactory) -> None:
    catalog = make_catalog(
        {
            "policy": "kind: policy\ninactive_after: 30d\n",
            "winback": """
            name: Win-back
            enroll: {on: lead_inactive, reenroll: always}
            steps:
              - {id: miss-you, day: 1, email: t/a}
            """,
        }
    )
    entries = timeline(
        catalog,
        lead(),
        [("signed_up", "2026-11-01T10:00:00Z", {}), ("email_clicked", "2027-01-15T10:00:00Z", {})],
        start="2026-11-01T10:00:00Z",
        until="2027-02-01T00:00:00Z",
    )
    assert sends(entries) == [("2026-12-01T10:00", "miss-you", "send")]


def test_a_sequence_edit_retimes_removes_and_skips_by_step_id(
    make_catalog: CatalogFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    v1 = """
    name: S
    enroll: {on: signed_up}
    steps:
      - {id: a, day: 1, email: t/a}
      - {id: b, day: 3, email: t/b}
      - {id: c, day: 5, email: t/c}
      - {id: d, day: 7, email: t/d}
    """
    v2 = """
    name: S
    enroll: {on: signed_up}
    steps:
      - {id: a, day: 1, email: t/a}
      - {id: e, day: 2, email: t/b}
      - {id: c, day: 4, email: t/c}
      - {id: d, day: 7, email: t/d}
      - {id: f, day: 9, email: t/a}
    """
    before = make_catalog({"s": v1})
    t0 = utc("2026-11-20T10:00:00Z")
    simulation = Simulation(before, LeadWorld(lead()), t0 + timedelta(days=1, hours=1))
    simulation.run([Event("signed_up", t0)], t0, [])
    after, problems = load_catalog_from(tmp_path_factory.mktemp("v2"), {"s": v2})
    assert not problems
    report = simulation.redeploy(after, t0 + timedelta(days=1, hours=1))
    simulation.until = t0 + timedelta(days=30)
    simulation.run([], t0 + timedelta(days=1, hours=1), [])
    [migration] = report.values()
    assert (migration.retimed, migration.removed, migration.skipped, migration.added) == (
        1,
        1,
        1,
        2,
    )
    entries = sorted(simulation.entries, key=timeline_order)
    assert sends(entries) == [
        ("2026-11-20T10:00", "a", "send"),
        ("2026-11-23T10:00", "c", "send"),  # Day 4 now
        ("2026-11-26T10:00", "d", "send"),
        ("2026-11-28T10:00", "f", "send"),
    ]
    skipped = [(e.step, e.reason) for e in entries if e.action == "skip"]
    assert skipped == [("b", "removed"), ("e", "past")]


def test_a_crm_task_reaction_before_an_exit_still_reaches_the_crm(
    make_catalog: CatalogFactory,
) -> None:
    catalog = make_catalog(
        {
            "s": """
            name: S
            enroll: {on: start}
            steps:
              - {id: later, day: 5, crm_task: {subject: "later"}}
            on:
              cancel:
                - crm_task: {subject: "Save {{ lead.email }}", priority: high}
                - exit: true
            """
        }
    )
    entries = timeline(
        catalog,
        lead(),
        [("start", "2026-11-20T10:00:00Z", {}), ("cancel", "2026-11-20T12:00:00Z", {})],
        start="2026-11-20T10:00:00Z",
    )
    tasks = [(e.at.strftime("%H:%M"), e.subject) for e in entries if e.action == "crm_task"]
    assert tasks == [("12:00", "Save ana@example.com")]
    assert ("later", "crm_task") not in [(e.step, e.action) for e in entries]
