"""The process's own instruments (Prometheus counters and histograms), counted where things
happen; docs/metrics.md lists them. Every label value comes from a bounded set (`bounded`):
no addresses, no ids, nothing a caller can grow.

In `nurture api|worker|beat|run` PROMETHEUS_MULTIPROC_DIR is set before this module is first
imported (`worker/kit/exposition.py`), so every process of a role (uvicorn workers, Celery's
prefork children) writes its counts to files there and one scrape adds them up. Elsewhere
(tests, one-off commands) they are plain in-process values in `REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
"""The instruments, when no multiprocess folder is set (tests, one-off commands)."""

OTHER = "other"
CHANNELS = frozenset({"email", "sms", "whatsapp", "crm_task", "notify"})
RESULTS = frozenset({"sent", "failed", "unknown", "deferred"})
PROVIDERS = frozenset({"smtp", "twilio", "hubspot", "webhook", "outbox", "none"})
ERROR_KINDS = frozenset({"timeout", "connection", "http_4xx", "http_5xx", "refused", OTHER})
SOURCES = frozenset({"api", "form", "shopify", "twilio", "tracking", "intake", "inbox"})
SKIP_REASONS = frozenset(
    {
        "exited",
        "no_address",
        "condition",
        "whatsapp_window",
        "past",
        "window",
        "reaction",
        "removed",
        "anchor",
        "erased",
        "retired",
        "suppressed",
    }
)
"""The engine's reasons for skipping a step (worker/support/reasons.py says them in words)."""
INBOX_KINDS = frozenset(
    {"reply", "auto_reply", "bounce", "delayed", "complaint", "unsubscribe", "unmatched",
     "unparseable"}
)  # fmt: skip

SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

EVENTS_INGESTED = Counter(
    "nurture_events_ingested",
    "Events recorded through the API and the vendor webhooks, by source and type (types the "
    "sequences and built-in sources do not know count as `other`)",
    ["source", "type"],
    registry=REGISTRY,
)
SENDS = Counter(
    "nurture_sends",
    "Messages handed to a provider, by channel and result (sent, failed, unknown, deferred)",
    ["channel", "result"],
    registry=REGISTRY,
)
SKIPS = Counter(
    "nurture_steps_skipped",
    "Steps skipped, by the engine's reason",
    ["reason"],
    registry=REGISTRY,
)
SEND_DURATION = Histogram(
    "nurture_send_duration_seconds",
    "Seconds from a step's claim to its provider's answer being recorded, per message",
    ["channel"],
    buckets=SEND_BUCKETS,
    registry=REGISTRY,
)
PROVIDER_DURATION = Histogram(
    "nurture_provider_request_duration_seconds",
    "Seconds one call to a provider took (a send, a CRM task, a CRM push)",
    ["provider"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
THROTTLED = Counter(
    "nurture_provider_throttled",
    "Rate limits met: a provider's 429, or a wait for our own rate limit's slot",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "nurture_provider_errors",
    "Failed calls to a provider, by kind (timeout, connection, http_4xx, http_5xx, refused, other)",
    ["provider", "kind"],
    registry=REGISTRY,
)
INBOX_MESSAGES = Counter(
    "nurture_inbox_messages",
    "Messages read from the reply mailbox, by kind (unparseable ones are left in place)",
    ["kind"],
    registry=REGISTRY,
)


def initialize() -> None:
    """Every series of the counters whose labels are all bounded, at zero: a scrape shows them
    before the first one happens (alerts and panels find them; `rate()` has a start)."""
    for reason in SKIP_REASONS:
        SKIPS.labels(reason)
    for channel in CHANNELS:
        for result in RESULTS:
            SENDS.labels(channel, result)
    for provider in PROVIDERS:
        THROTTLED.labels(provider)
        for kind in ERROR_KINDS:
            PROVIDER_ERRORS.labels(provider, kind)
    for kind in INBOX_KINDS:
        INBOX_MESSAGES.labels(kind)


def bounded(value: str | None, allowed: Iterable[str]) -> str:
    """`value` when it is one of `allowed`, else `other`: a label never grows unbounded."""
    return value if value is not None and value in allowed else OTHER


def count_events(source: str, types: Iterable[str], known: frozenset[str]) -> None:
    """Events recorded from `source`, one per type given (repeats count again)."""
    label = bounded(source, SOURCES)
    for kind in types:
        EVENTS_INGESTED.labels(label, bounded(kind, known)).inc()


def count_send(channel: str | None, result: str, seconds: float | None = None) -> None:
    """A message's answer recorded; `seconds` since its claim, when known."""
    label = bounded(channel, CHANNELS)
    SENDS.labels(label, bounded(result, RESULTS)).inc()
    if seconds is not None:
        SEND_DURATION.labels(label).observe(max(0.0, seconds))


def count_skip(reason: str | None) -> None:
    SKIPS.labels(bounded(reason, SKIP_REASONS)).inc()


def count_throttled(provider: str) -> None:
    THROTTLED.labels(bounded(provider, PROVIDERS)).inc()


def count_inbox(kind: str) -> None:
    INBOX_MESSAGES.labels(bounded(kind, INBOX_KINDS)).inc()


def count_call(provider: str, seconds: float, failure: str | None = None) -> None:
    """One call to `provider` that took `seconds`; `failure`: `throttled`, or the kind of
    error (worker/runtime/calls.py tells which)."""
    label = bounded(provider, PROVIDERS)
    PROVIDER_DURATION.labels(label).observe(max(0.0, seconds))
    if failure == "throttled":
        THROTTLED.labels(label).inc()
    elif failure is not None:
        PROVIDER_ERRORS.labels(label, bounded(failure, ERROR_KINDS)).inc()
