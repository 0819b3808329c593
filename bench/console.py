"""Benchmark: do the console's lead search and lead page cost the same at 100,000 leads as at
1,000?

Two PostgreSQL databases in the same run: 1,000 leads and 100,000 leads, each lead with the
rows of a real one (made through the event API and the worker, then cloned with COPY): two
enrollments (one running, one exited), 10 step runs (3 sent, 5 waiting, 2 skipped), 3 messages
with the copies of the emails, 9 events (two of them `segment_changed`) — 10,000 and
1,000,000 step runs in all. Names come
from a short list, so a name prefix matches many leads at both sizes (5% are "Maria").

- **Measure**, median of 20 each, alternating between the databases, server time (in this
  process, no network): the search service (`search`) for an email, a phone typed as
  `(650) 200-0123`, a name prefix matching one lead and one matching hundreds (cut at 50);
  the lead page's model (`lead_page`); and both pages rendered through the app (TestClient,
  signed in): `GET /console/leads?q=…` and `GET /console/leads/{id}`.
- **Goal**: each ≤ 300 ms at 100,000 leads, and 100k / 1k ≤ 1.2. EXPLAIN (ANALYZE) of the
  name-prefix query shows the plan at both sizes.

    .venv/bin/python bench/console.py             # 1,000 vs 100,000 leads, ~3 min
    .venv/bin/python bench/console.py --quick     # 1,000 vs 20,000 leads

Not part of the test run. Needs the PostgreSQL binaries (scripts/install-test-servers).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
from _data import libpq_url, scalar, table, vacuum_analyze
from _servers import run_main, wait_until_idle, wide_console
from fastapi.testclient import TestClient
from rich.table import Table
from sqlalchemy import Engine, create_engine, event, select
from sqlmodel import Session, col

from tests.helpers import fresh_database, write_project
from tests.servers.databases import postgres
from worker.accounts.roles import Role
from worker.accounts.users import add_user
from worker.api.app import create_app
from worker.config import Settings
from worker.ingest.intake import apply
from worker.ingest.schemas import EventIn
from worker.runtime.process import Runtime, build
from worker.sending.service import send_steps
from worker.store.db import transaction
from worker.store.leads import SearchTerms, search_leads, search_names
from worker.store.migrate import upgrade
from worker.store.steps import claim_due
from worker.store.tables import EnrollmentRow, EventRow, LeadRow, MessageRow, StepRunRow
from worker.support.deploy import deploy
from worker.support.search import search
from worker.support.timeline import lead_page

RATIO_GOAL = 1.2
TIME_GOAL_MS = 300.0
PASSWORD = "correct horse battery"
console = wide_console()

FILES = {
    "sequences/onboarding.yaml": """
        name: Onboarding
        enroll: {on: signed_up}
        steps:
          - {id: welcome, at: 0m, email: b/hello}
          - {id: setup, at: 1h, email: b/hello}
          - {id: tips, at: 2h, email: b/hello}
          - {id: case-study, day: 4, email: b/hello}
          - {id: webinar, day: 6, email: b/hello}
          - {id: pricing, day: 8, email: b/hello}
          - {id: offer, day: 10, email: b/hello}
          - {id: last-call, day: 12, email: b/hello}
        """,
    "sequences/promo.yaml": """
        name: Promo
        enroll: {on: signed_up}
        exit_on: [promo_declined]
        steps:
          - {id: intro, day: 3, email: b/hello}
          - {id: reminder, day: 5, email: b/hello}
        """,
    "sequences/scoring.yaml": """
        kind: scoring
        points: {pricing_page_viewed: 10}
        segments: {cold: 0, warm: 20, hot: 50}
        """,
    "templates/b/hello.html.j2": (
        '---\nsubject: "{{ lead.first_name }}, a note from Acme ({{ step.id }})"\n---\n'
        "<p>Hi {{ lead.first_name }},</p>\n<p>Here is what most teams do in their first "
        'week with Acme: <a href="https://acme.example/guide">the guide</a>, '
        '<a href="https://acme.example/webinar">the webinar</a> and '
        '<a href="https://acme.example/pricing">our pricing</a>.</p>\n'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
    ),
}
SYLLABLES = ("Al", "Be", "Ca", "Do", "El", "Fa", "Gi", "Ha", "Io", "Ju")
FIRST = ["Maria"] + [f"{a}{b}" for a in SYLLABLES for b in ("na", "ro", "mi", "la", "ko")]
STEMS = ("Stone", "Brook", "Field", "Wood", "Hill", "Lake", "Marsh")
LAST = [f"{a}{b}{c}" for a in STEMS for b in ("er", "ley", "man", "ford") for c in ("", "s", "e")]
ONE = "Ada Lovelace"
"""The name only one lead has, at both sizes."""


@dataclass
class State:
    name: str
    leads: int
    url: str = ""
    build_seconds: float = 0.0
    size_mib: float = 0.0
    step_runs: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    plan: str = ""
    server_ms: float = 0.0


@dataclass(frozen=True)
class Template:
    """One real lead's rows, as column → value dicts."""

    lead: dict[str, Any]
    enrollments: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    events: list[dict[str, Any]]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--baseline-leads", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="20,000 leads against 1,000")
    parser.add_argument("--wait-idle", type=float, default=300.0, help="wait up to this long for "
                        "other processes to leave the machine idle")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.leads = 20_000
    return args


def main() -> int:
    args = arguments()
    folder = Path(tempfile.mkdtemp(prefix="nurture-bench-console-"))
    states = [State("baseline", args.baseline_leads), State("large", args.leads)]
    try:
        write_project(folder, FILES)
        with postgres() as server_url:
            for state in states:
                console.print(f"{state.name}: {state.leads:,} leads …")
                state.url = fresh_database(server_url)
                build_database(folder, state)
            wait_until_idle(console, args.wait_idle)
            measure(args, folder, states)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report(args, states)


def runtime_for(folder: Path, url: str) -> Runtime:
    return build(
        Settings(
            home=folder / ".nurture",
            database_url=url,
            sequences_dir=folder / "sequences",
            templates_dir=folder / "templates",
            outbox_dir=folder / "outbox",
        )
    )


# -- the data ----------------------------------------------------------------------------------


def build_database(folder: Path, state: State) -> None:
    began = time.perf_counter()
    upgrade(state.url)
    runtime = runtime_for(folder, state.url)
    deploy(runtime, reload=False)
    add_user(runtime.database, "sam", Role.SUPPORT, PASSWORD)
    template = real_lead(runtime)
    runtime.database.dispose()
    copy_clones(state.url, template, state.leads)
    vacuum_analyze(state.url)
    state.build_seconds = time.perf_counter() - began
    engine = create_engine(state.url)
    try:
        state.size_mib = int(scalar(engine, "SELECT pg_database_size(current_database())")) / 2**20
        state.step_runs = int(scalar(engine, "SELECT count(*) FROM step_runs"))
    finally:
        engine.dispose()


def real_lead(runtime: Runtime) -> Template:
    """One lead through the event API and the worker: signed up, three emails sent, the promo
    declined, the pricing page seen twice. Its rows are read back and the lead removed."""
    lead = {"email": "template@example.com", "first_name": "Tem", "last_name": "Plate",
            "phone": "+16505550199", "timezone": "America/Chicago"}  # fmt: skip
    lead_id = apply(runtime, EventIn.model_validate({"type": "signed_up", "lead": lead})).lead_id
    now = datetime.now(UTC)
    for hours in (0, 1, 2):
        at = now + timedelta(hours=hours, seconds=5)
        with transaction(runtime.database) as session:
            due = claim_due(session, at, 100)
        send_steps(runtime, due, _clock(at))
    for kind in ("pricing_page_viewed", "pricing_page_viewed", "promo_declined"):
        apply(runtime, EventIn.model_validate({"type": kind, "lead": {"email": lead["email"]}}))
    with transaction(runtime.database) as session:

        def rows(model: Any) -> list[dict[str, Any]]:
            found = session.execute(select(model).where(col(model.lead_id) == lead_id)).scalars()
            return [row.model_dump() for row in found]

        lead_row = session.get(LeadRow, lead_id)
        assert lead_row is not None
        template = Template(lead_row.model_dump(), rows(EnrollmentRow), rows(StepRunRow),
                            rows(MessageRow), rows(EventRow))  # fmt: skip
        for model in (StepRunRow, EnrollmentRow, MessageRow, EventRow):
            for row in session.execute(select(model).where(col(model.lead_id) == lead_id)):
                session.delete(row[0])
        session.delete(lead_row)
    counts = (len(template.runs), len(template.messages))
    if counts != (10, 3):
        raise RuntimeError(f"the template lead has {counts} step runs and messages, not 10 and 3")
    return template


def _clock(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def person(number: int) -> tuple[str, str]:
    if number == 7:
        first, last = ONE.split()
        return first, last
    first = FIRST[0] if number % 20 == 0 else FIRST[number % len(FIRST)]
    return first, LAST[(number * 37) % len(LAST)]  # every last name at both sizes


def clones(template: Template, count: int) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """`count` leads shaped like the template, each with new ids, identities and names."""
    for number in range(count):
        lead_id = uuid.uuid4().hex
        first, last = person(number)
        whole, family = search_names(first, last)
        lead = {**template.lead, "id": lead_id, "email": f"lead{number}@example.com",
                "phone": f"+1650{2000000 + number:07d}", "external_id": f"crm-{number}",
                "first_name": first, "last_name": last, "search_name": whole,
                "search_last": family}  # fmt: skip
        ids = {row["id"]: uuid.uuid4().hex for row in (*template.enrollments, *template.runs)}
        enrollments = [{**e, "id": ids[e["id"]], "lead_id": lead_id} for e in template.enrollments]
        runs = [{**r, "id": ids[r["id"]], "lead_id": lead_id,
                 "enrollment_id": ids.get(r["enrollment_id"])} for r in template.runs]  # fmt: skip
        messages = [{**m, "id": uuid.uuid4().hex, "lead_id": lead_id, "to": lead["email"],
                     "step_run_id": ids[m["step_run_id"]]} for m in template.messages]  # fmt: skip
        events = [{**e, "id": uuid.uuid4().hex, "lead_id": lead_id, "idempotency_key": None}
                  for e in template.events]  # fmt: skip
        yield {"leads": [lead], "enrollments": enrollments, "step_runs": runs,
               "messages": messages, "events": events}  # fmt: skip


def copy_clones(url: str, template: Template, count: int, chunk: int = 10_000) -> None:
    """COPY per table, one transaction per `chunk` leads."""
    names = ("leads", "enrollments", "step_runs", "messages", "events")
    columns = {name: [c.name for c in table(name).columns] for name in names}
    iterator = clones(template, count)
    with psycopg.connect(libpq_url(url)) as connection:
        while part := list(islice(iterator, chunk)):
            with connection.transaction(), connection.cursor() as cursor:
                for name in names:
                    quoted = ", ".join(f'"{n}"' for n in columns[name])
                    with cursor.copy(f"COPY {name} ({quoted}) FROM STDIN") as copy:
                        for each in part:
                            for row in each[name]:
                                copy.write_row([_value(row[n]) for n in columns[name]])


def _value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


# -- the measure -------------------------------------------------------------------------------

QUERIES: dict[str, Callable[[int], str]] = {
    "search: email": lambda n: f"lead{n}@example.com",
    "search: phone (650) 200-…": lambda n: f"(650) {200 + n // 10000:03d}-{n % 10000:04d}",
    "search: name, one lead": lambda n: ONE.lower()[:7],
    "search: name, many (50 shown)": lambda n: "mar",
}


def measure(args: argparse.Namespace, folder: Path, states: list[State]) -> None:
    runtimes = {state.name: runtime_for(folder, state.url) for state in states}
    clients: dict[str, TestClient] = {}
    try:
        for state in states:
            runtime = runtimes[state.name]
            client = TestClient(create_app(_factory(runtime)), follow_redirects=False)
            client.__enter__()
            clients[state.name] = client
            answer = client.post("/console/login", data={"name": "sam", "password": PASSWORD})
            if answer.status_code != 303:
                raise RuntimeError(f"cannot sign in: {answer.status_code} {answer.text[:200]}")
            explain(runtime.database, state)
        for repeat in range(args.repeats + 3):  # the first 3 warm the caches, not counted
            order = states if repeat % 2 == 0 else list(reversed(states))
            for state in order:
                middle = state.leads // 2 + repeat
                for label, took, found in operations(runtimes[state.name], clients[state.name],
                                                     middle):  # fmt: skip
                    state.found[label] = found
                    if repeat >= 3:
                        state.times.setdefault(label, []).append(took)
    finally:
        for client in clients.values():
            client.__exit__(None, None, None)
        for each in runtimes.values():
            each.database.dispose()


def _factory(runtime: Runtime) -> Callable[[], Runtime]:
    return lambda: runtime


def timed(work: Callable[[], int]) -> tuple[float, int]:
    began = time.perf_counter()
    found = work()
    return time.perf_counter() - began, found


def operations(
    runtime: Runtime, client: TestClient, number: int
) -> Iterator[tuple[str, float, int]]:
    """(what, seconds, how many it found) for each measured operation, on lead `number`."""
    for label, query in QUERIES.items():
        typed = query(number)
        took, found = timed(lambda: len(search(runtime, typed).leads))  # noqa: B023
        yield label, took, found
    lead_id = search(runtime, f"lead{number}@example.com").leads[0].id
    took, found = timed(lambda: len(lead_page(runtime, lead_id, "Europe/Berlin").timeline))
    yield "lead_page (the model)", took, found

    def get(path: str, params: dict[str, str] | None = None) -> int:
        answer = client.get(path, params=params)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code}")
        return len(answer.content)

    took, found = timed(lambda: get("/console/leads", {"q": "mar"}))
    yield "GET /console/leads?q=mar (bytes)", took, found
    took, found = timed(lambda: get(f"/console/leads/{lead_id}"))
    yield "GET /console/leads/{id} (bytes)", took, found


def explain(engine: Engine, state: State) -> None:
    """EXPLAIN (ANALYZE) of the name-prefix query the search sends."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "search_name >=" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as session:
            search_leads(session, SearchTerms(name_prefix="mar"), 50)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    statement, parameters = seen[0]
    with engine.connect() as connection:
        found = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
        ).scalar_one()
    plan = (json.loads(found) if isinstance(found, str) else found)[0]
    state.server_ms = float(plan["Execution Time"])
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node["Node Type"] + (f" {node['Index Name']}" if "Index Name" in node else ""))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    state.plan = " ← ".join(nodes)


def report(args: argparse.Namespace, states: list[State]) -> int:
    base, large = states
    title = (
        f"console: {large.leads:,} leads ({large.step_runs:,} step runs) vs {base.leads:,} "
        f"({base.step_runs:,}), PostgreSQL, median of {args.repeats}"
    )
    table_ = Table(title=title)
    table_.add_column("measure")
    for state in states:
        table_.add_column(f"{state.leads:,} leads", justify="right")
    table_.add_column(f"ratio (goal ≤ {RATIO_GOAL}, ≤ {TIME_GOAL_MS:.0f} ms)", justify="right")
    table_.add_row("build (ingest + COPY + VACUUM ANALYZE)", f"{base.build_seconds:,.1f} s",
                   f"{large.build_seconds:,.1f} s", "")  # fmt: skip
    table_.add_row("database size", f"{base.size_mib:,.0f} MiB", f"{large.size_mib:,.0f} MiB", "")
    met = True
    for label in base.times:
        medians = [statistics.median(s.times[label]) * 1000 for s in states]
        ratio = medians[1] / medians[0]
        ok = ratio <= RATIO_GOAL and medians[1] <= TIME_GOAL_MS
        met = met and ok
        verdict = "[green]met" if ok else "[red]missed"
        found = f" ({base.found[label]:,} / {large.found[label]:,})"
        table_.add_row(f"[b]{label}[/]{found}", f"{medians[0]:,.2f} ms", f"{medians[1]:,.2f} ms",
                       f"[b]{ratio:.3f} {verdict}")  # fmt: skip
    table_.add_row("name prefix query: server execution (EXPLAIN ANALYZE)",
                   f"{base.server_ms:,.2f} ms", f"{large.server_ms:,.2f} ms",
                   f"{large.server_ms / base.server_ms:.3f}")  # fmt: skip
    table_.add_row("  plan", base.plan, large.plan, "")
    console.print(table_)
    console.print("(n / n): what each found at both sizes: leads, timeline steps, page bytes")
    return 0 if met else 1


if __name__ == "__main__":
    run_main(main)
