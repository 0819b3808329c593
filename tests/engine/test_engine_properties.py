"""Properties of the engine over random leads and event streams (hypothesis)."""

from __future__ import annotations

import tempfile
import textwrap
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.library import EMAIL
from worker.authoring.simulate import Simulation
from worker.definitions.catalog import Catalog, load_catalog
from worker.engine import timing
from worker.engine.state import Entry, Event, Lead, LeadWorld, StepStatus

DRIP = """
name: Drip
enroll: {on: signed_up}
exit_on: [purchased]
window: {days: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}
steps:
  - {id: d1, day: 1, email: t/a}
  - {id: nudge, after: 3h, sms: t/a}
  - {id: d3, day: 3, email: t/b, skip_if: "'feature_used' in events"}
  - id: d5
    day: 5
    variants: [{email: t/a}, {email: t/b}]
  - {id: task, at: 6d, crm_task: {subject: "Call {{ lead.email }}"}}
on:
  pricing_page_viewed:
    - send: {id: pricing, email: t/c, delay: 1h}
    - skip: [d5]
  out_of_office:
    - pause: {for: 1d}
  cancel:
    - exit: true
"""
CART = """
name: Cart
enroll: {on: checkout_started, key: "event.properties.cart_token", reenroll: after_exit}
exit_on: [order_placed]
steps:
  - {id: r1, at: 1h, email: t/a}
  - {id: r24, at: 24h, email: t/b}
"""
AGAIN = """
name: Again
enroll: {on: ping, reenroll: always}
steps:
  - {id: a1, day: 1, email: t/a}
  - {id: a2, day: 2, sms: t/a}
"""
SCORING = """
kind: scoring
points: {pricing_page_viewed: 30, feature_used: 10, cancel: -40}
decay: {half_life: 10d}
segments: {hot: 50, warm: 20, cold: 0}
on_segment:
  hot:
    - crm_task: {subject: "Hot"}
"""
POLICY = """
kind: policy
caps: {email: {per: 1d, max: 2}}
"""
DRIP_EDITED = (
    DRIP.replace("  - {id: d3, day: 3, email: t/b, skip_if: \"'feature_used' in events\"}\n", "")
    .replace("{id: d5\n    day: 5", "{id: d5\n    day: 4")
    .replace("    day: 5\n", "    day: 4\n")
    .replace("  - {id: task,", "  - {id: extra, day: 2, email: t/c}\n  - {id: task,")
)


def _catalog(files: dict[str, str]) -> Catalog:
    root = Path(tempfile.mkdtemp(prefix="nurture-props-"))
    (root / "sequences").mkdir()
    for name, text in files.items():
        (root / "sequences" / f"{name}.yaml").write_text(textwrap.dedent(text))
    (root / "templates" / "t").mkdir(parents=True)
    for name in "abc":
        (root / "templates" / "t" / f"{name}.html.j2").write_text(EMAIL)
        (root / "templates" / "t" / f"{name}.sms.j2").write_text("Hi")
    catalog, problems = load_catalog(root / "sequences", root / "templates")
    assert not problems, problems
    return catalog


FILES = {"drip": DRIP, "cart": CART, "again": AGAIN, "scoring": SCORING, "policy": POLICY}
CATALOG = _catalog(FILES)
EDITED = _catalog({**FILES, "drip": DRIP_EDITED})
START = datetime(2026, 11, 16, 7, 0, tzinfo=UTC)
END = START + timedelta(days=40)
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Lord_Howe"]
TYPES = [
    "signed_up", "purchased", "pricing_page_viewed", "out_of_office", "cancel", "feature_used",
    "checkout_started", "order_placed", "ping", "unsubscribed",
]  # fmt: skip

events_strategy = st.lists(
    st.tuples(
        st.sampled_from(TYPES),
        st.integers(min_value=0, max_value=30 * 24 * 60),
        st.sampled_from(["c1", "c2", None]),
    ),
    max_size=25,
)
lead_strategy = st.builds(
    lambda zone, sms: Lead(
        id="lead-1",
        email="ana@example.com",
        phone="+12125550123",
        timezone=zone,
        consent={"sms": sms},
    ),
    st.sampled_from(ZONES),
    st.booleans(),
)


def _events(raw: list[tuple[str, int, str | None]]) -> list[Event]:
    events = []
    for kind, minutes, cart in raw:
        properties = {"cart_token": cart} if cart else {}
        events.append(Event(kind, START + timedelta(minutes=minutes), properties))
    return sorted(events, key=lambda e: e.occurred_at)


def _run(lead: Lead, events: list[Event], until: datetime = END) -> tuple[Simulation, list[Entry]]:
    simulation = Simulation(CATALOG, LeadWorld(lead), until)
    simulation.run(events, START, [])
    return simulation, simulation.entries


DECIDED = ("send", "crm_task", "notify", "skip")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(lead_strategy, events_strategy)
def test_no_step_is_decided_twice(lead: Lead, raw: list[tuple[str, int, str | None]]) -> None:
    _, entries = _run(lead, _events(raw))
    decided = Counter((e.enrollment, e.step) for e in entries if e.action in DECIDED and e.step)
    assert all(count == 1 for count in decided.values()), decided.most_common(3)


@PROPERTY
@given(lead_strategy, events_strategy)
def test_nothing_goes_out_outside_its_window_or_in_quiet_hours(
    lead: Lead, raw: list[tuple[str, int, str | None]]
) -> None:
    _, entries = _run(lead, _events(raw))
    zone = ZoneInfo(lead.timezone or "UTC")
    weekdays = timing.WindowRule(days=frozenset(range(5)), hours=(time(9), time(18)))
    quiet = (time(21), time(8))
    for entry in entries:
        if entry.action != "send":
            continue
        if entry.sequence == "drip":
            assert timing.in_window(entry.at, weekdays, zone), entry
        if entry.channel == "sms":
            assert not timing.in_quiet_hours(entry.at, quiet, zone), entry


@PROPERTY
@given(lead_strategy, events_strategy)
def test_simulated_time_only_moves_forward(
    lead: Lead, raw: list[tuple[str, int, str | None]]
) -> None:
    _, entries = _run(lead, _events(raw))
    times = [e.at for e in entries]
    assert times == sorted(times)


@PROPERTY
@given(lead_strategy, events_strategy)
def test_an_exit_is_final(lead: Lead, raw: list[tuple[str, int, str | None]]) -> None:
    simulation, entries = _run(lead, _events(raw))
    exited_at: dict[str | None, int] = {}
    for index, entry in enumerate(entries):
        if entry.action == "exit":
            exited_at[entry.enrollment] = index
    for index, entry in enumerate(entries):
        if entry.enrollment in exited_at and entry.action in DECIDED:
            assert index < exited_at[entry.enrollment], entry
    for enrollment in simulation.world.enrollments:
        if enrollment.status == "exited":
            assert all(r.status is not StepStatus.PENDING for r in enrollment.steps)


@PROPERTY
@given(lead_strategy, events_strategy, st.integers(min_value=1, max_value=20 * 24))
def test_a_sequence_edit_never_resends_a_step_already_sent(
    lead: Lead, raw: list[tuple[str, int, str | None]], edit_after_hours: int
) -> None:
    events = _events(raw)
    edit_at = START + timedelta(hours=edit_after_hours)
    simulation, _ = _run(lead, [e for e in events if e.occurred_at < edit_at], until=edit_at)
    sent_before = {
        (e.enrollment, e.step) for e in simulation.entries if e.action in ("send", "crm_task")
    }
    simulation.until = END
    simulation.redeploy(EDITED, edit_at)
    before = len(simulation.entries)
    simulation.run([e for e in events if e.occurred_at >= edit_at], edit_at, [])
    after = simulation.entries[before:]
    resent = [e for e in after if e.action in ("send", "crm_task")
              and (e.enrollment, e.step) in sent_before]  # fmt: skip
    assert resent == []
    assert not [e for e in after if e.step == "d3" and e.action == "send"]  # removed step
