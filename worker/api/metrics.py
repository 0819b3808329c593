"""GET /metrics: Prometheus text (docs/metrics.md lists every series).

Two sources: the counters and histograms this role's processes keep as things happen
(worker/kit/metrics.py; added up over the uvicorn workers by prometheus-client's
multiprocess mode; `nurture run` counts its worker and beat here too), and gauges read from the
database with queries whose cost does not grow with history (worker/store/gauges.py). When
those queries fail, `nurture_database_up` is 0 and the gauges are absent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.kit import metrics as instruments
from worker.kit.clock import utcnow
from worker.kit.exposition import registry as process_registry
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.gauges import Gauges, read_gauges
from worker.store.heartbeats import ROLES

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

DUE_CHANNELS = ("email", "sms", "whatsapp")
"""Always shown, 0 when nothing is due, so a panel has its lines from the start."""
HELD = frozenset(
    {
        "paused",
        "sequence_paused",
        "sends_paused",
        "sequence_missing",
        "cap",
        "window",
        "quiet_hours",
        "provider_held",
        "retry",
    }
)
"""The reasons a pending step waits (the engine's, and `retry`/`provider_held` for a provider's
answer); any other counts as `other`."""


class ProcessCollector(Collector):
    """The role's own counters, however many processes count them."""

    def collect(self) -> Iterator[Metric]:
        yield from process_registry().collect()


class DatabaseCollector(Collector):
    """Gauges read from the database on every collect()."""

    def __init__(self, runtime: Callable[[], Runtime], clock: Callable[[], datetime]) -> None:
        self.runtime = runtime
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        try:
            with transaction(self.runtime().database) as session:
                gauges: Gauges | None = read_gauges(session, now)
        except Exception:  # a scrape must answer: report the database as down instead
            log.exception("metrics: the database queries failed")
            gauges = None
        yield _gauge(
            "nurture_database_up", "1 when the metrics queries succeeded", 1 if gauges else 0
        )
        if gauges is not None:
            yield from families(gauges, now)


def families(found: Gauges, now: datetime) -> Iterator[Metric]:
    yield _gauge(
        "nurture_event_intake_pending",
        "Events answered 202 and not applied yet",
        found.intake_pending,
    )
    yield _gauge(
        "nurture_event_intake_failed",
        "Events answered 202 that the database refused when applied (see event_intake.error)",
        found.intake_failed,
    )
    due = GaugeMetricFamily("nurture_steps_due", "Pending steps due now", labels=["channel"])
    for channel, count in _bounded(found.due, instruments.CHANNELS, DUE_CHANNELS).items():
        due.add_metric([channel], count)
    yield due
    age = (now - found.oldest_due).total_seconds() if found.oldest_due else 0.0
    yield _gauge(
        "nurture_oldest_due_step_age_seconds",
        "Seconds the oldest due pending step has waited (0 when none)",
        max(0.0, age),
    )
    yield _gauge(
        "nurture_steps_unknown",
        "Step runs in doubt (handed to a provider, no answer recorded)",
        found.unknown,
    )
    held = GaugeMetricFamily(
        "nurture_steps_held", "Pending steps waiting for a reason", labels=["reason"]
    )
    for reason, count in _bounded(found.held, HELD).items():
        held.add_metric([reason], count)
    yield held
    provider = GaugeMetricFamily(
        "nurture_provider_held",
        "1 while a provider that refused our credentials is held (no calls to it)",
        labels=["provider"],
    )
    for name, until in sorted(found.provider_holds.items()):
        provider.add_metric(
            [instruments.bounded(name, instruments.PROVIDERS)], 1 if until > now else 0
        )
    yield provider
    yield _gauge("nurture_crm_backlog", "CRM outbox changes not pushed yet", found.crm_backlog)
    lag = (now - found.crm_oldest).total_seconds() if found.crm_oldest else 0.0
    yield _gauge(
        "nurture_crm_sync_lag_seconds",
        "Age of the oldest CRM change not pushed yet (0 when none)",
        max(0.0, lag),
    )
    poll = GaugeMetricFamily(
        "nurture_inbox_last_poll_timestamp_seconds", "Unix time of the reply mailbox's last poll"
    )
    if found.last_poll is not None:  # declared, without a sample, until the first poll
        poll.add_metric([], found.last_poll.timestamp())
    yield poll
    stamp = GaugeMetricFamily(
        "nurture_heartbeat_timestamp_seconds",
        "Unix time of the newest heartbeat of a worker or beat process",
        labels=["role"],
    )
    alive = GaugeMetricFamily(
        "nurture_processes_alive",
        "Processes whose heartbeat is under 60 s old",
        labels=["role"],
    )
    for role in ROLES:
        newest, count = found.heartbeats.get(role, (None, 0))
        if newest is not None:
            stamp.add_metric([role], newest.timestamp())
        alive.add_metric([role], count)
    yield stamp
    yield alive


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def _bounded(
    values: dict[str | None, int] | dict[str, int],
    allowed: frozenset[str],
    always: tuple[str, ...] = (),
) -> dict[str, int]:
    found = dict.fromkeys(always, 0)
    for label, count in values.items():
        key = instruments.bounded(label, allowed)
        found[key] = found.get(key, 0) + count
    return dict(sorted(found.items()))


def render(runtime: Callable[[], Runtime], clock: Callable[[], datetime] | None = None) -> bytes:
    """The exposition text; a fresh registry each time, so nothing is shared or registered
    twice."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessCollector())
    registry.register(DatabaseCollector(runtime, clock or utcnow))
    return generate_latest(registry)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    """Prometheus text exposition: this role's counters and the database's gauges."""
    return Response(render(request.app.state.runtime_factory), media_type=CONTENT_TYPE_LATEST)
