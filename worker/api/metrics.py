"""GET /metrics: Prometheus text, counted from the database at scrape time.

The API, the workers and beat are separate processes; the database is the one place that
sees all of them, so a custom collector queries it on each scrape instead of keeping
in-process counters. Series:

- `nurture_events_total{type}`: events recorded, by type
- `nurture_steps{status}`: step runs by status (pending, queued, sent, unknown …)
- `nurture_due_lag_seconds`: how long the longest-waiting due step has been due
- `nurture_provider_errors_total{channel,kind}`: failed step runs by reason (the provider's
  code, `render_error` …)
- `nurture_inbox_messages_total{kind}`: messages read from the reply mailbox by kind
  (reply, auto_reply, bounce, delayed, complaint, unparseable; docs/inbox.md)
- `nurture_provider_held{provider}`: 1 while a provider that refused our credentials (a 401 or
  403) is held, 0 once the hold ran out (twilio, hubspot, webhook; docs/operations.md)
- `nurture_database_up`: 1, or 0 when the queries failed (the other series are then absent)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.inbox import repository as inbox_store
from worker.kit.clock import utcnow
from worker.runtime.process import Runtime
from worker.stats import repository as store
from worker.store.db import transaction
from worker.store.holds import provider_holds

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


class DatabaseCollector(Collector):
    """Counts from the database on every collect()."""

    def __init__(self, runtime: Callable[[], Runtime], clock: Callable[[], datetime]) -> None:
        self.runtime = runtime
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            found = list(self._families())
        except Exception:  # a scrape must answer: report the database as down instead
            log.exception("metrics: the database queries failed")
            found = []
        up = GaugeMetricFamily("nurture_database_up", "1 when the metrics queries succeeded")
        up.add_metric([], 1 if found else 0)
        yield up
        yield from found

    def _families(self) -> Iterator[Metric]:
        now = self.clock()
        with transaction(self.runtime().database) as session:
            events = store.events_by_type(session)
            steps = store.steps_by_status(session)
            oldest = store.oldest_due(session, now)
            failures = store.failures(session)
            inbox = inbox_store.counts_by_kind(session)
            holds = provider_holds(session)
        yield _counter("nurture_events", "Events recorded, by type", ["type"], events)
        gauge = GaugeMetricFamily("nurture_steps", "Step runs by status", labels=["status"])
        for status, count in sorted(steps.items()):
            gauge.add_metric([status], count)
        yield gauge
        lag = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
        yield GaugeMetricFamily(
            "nurture_due_lag_seconds", "Seconds the oldest due pending step has waited", value=lag
        )
        errors = CounterMetricFamily(
            "nurture_provider_errors",
            "Failed step runs by channel and reason",
            labels=["channel", "kind"],
        )
        for (channel, kind), count in sorted(failures.items()):
            errors.add_metric([channel, kind], count)
        yield errors
        yield _counter(
            "nurture_inbox_messages",
            "Messages read from the reply mailbox, by kind (unparseable ones are left in place)",
            ["kind"],
            inbox,
        )
        held = GaugeMetricFamily(
            "nurture_provider_held",
            "1 while a provider that refused our credentials is held (no calls to it)",
            labels=["provider"],
        )
        for provider, until in sorted(holds.items()):
            held.add_metric([provider], 1 if until > now else 0)
        yield held


def _counter(name: str, doc: str, labels: list[str], values: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label, count in sorted(values.items()):
        family.add_metric([label], count)
    return family


def render(runtime: Callable[[], Runtime], clock: Callable[[], datetime] | None = None) -> bytes:
    """The exposition text; a fresh registry each time, so nothing is shared or registered
    twice."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(runtime, clock or utcnow))
    return generate_latest(registry)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    """Prometheus text exposition, counted from the database at scrape time."""
    return Response(render(request.app.state.runtime_factory), media_type=CONTENT_TYPE_LATEST)
