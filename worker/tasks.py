"""The Celery app and its thin tasks: ids in, a service called, nothing else.

No countdowns or ETAs: a step waiting for its time is a row with `due_at`, found by the
dispatcher every second. The broker only carries work; losing it loses nothing (the sweeper
re-queues what a lost message held).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from celery import Celery

from worker.config import Settings, settings
from worker.crm.service import push_pending
from worker.ingest.early import drain_queued
from worker.kit.clock import utcnow
from worker.runtime.process import CatalogError, Runtime, current
from worker.sending.confirm import confirm_unknown_texts
from worker.sending.dispatch import lease_due, sweep_steps
from worker.sending.service import send_step, send_steps
from worker.stats.upkeep import compact
from worker.support.copies import prune_old_copies
from worker.support.deploy import deploy_if_changed
from worker.support.retention import prune_expired
from worker.world.ticks import wake_due_leads

log = logging.getLogger("nurture")
LEAD_TICK_INTERVAL = 30.0
LEAD_CHUNK = 100
"""Leads ticked per transaction."""
LEAD_TICK_SECONDS = 20.0
"""How long one `leads.tick` goes on while leads are due."""
CONFIRM_INTERVAL = 600.0
"""Seconds between asks about texts left `unknown` (sending/confirm.py)."""
PRUNE_INTERVAL = 6 * 3600.0
"""Seconds between prunes of email copies past their retention (a few times a day, so a
restarted beat does not put it off by a whole day)."""
RETENTION_INTERVAL = 3600.0
"""Seconds between runs of retention (CRM outbox, events, idempotency keys)."""


def broker_options(config: Settings) -> dict[str, Any]:
    if config.broker_url and not config.broker_url.startswith("filesystem"):
        return {"broker_url": config.broker_url}
    folder = (config.home / "broker").resolve()
    queue, processed = folder / "queue", folder / "processed"
    for path in (queue, processed):
        path.mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "store_processed": False,
        },
    }


def make_app(config: Settings | None = None) -> Celery:
    config = config or settings()
    config.home.mkdir(parents=True, exist_ok=True)
    app = Celery("nurture")
    app.conf.update(
        **broker_options(config),
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        # task events for Flower (docs/deploy.md); `nurture worker --events` turns them on too
        worker_send_task_events=config.worker_events,
        task_send_sent_event=config.worker_events,
        beat_schedule={
            # a tick that could not start in time is dropped, not piled up behind the sends
            "dispatch": {
                "task": "dispatch.tick",
                "schedule": config.dispatch_interval,
                "options": {"expires": max(1.0, config.dispatch_interval * 2)},
            },
            "sweep": {
                "task": "sweep.tick",
                "schedule": config.sweep_interval,
                "options": {"expires": config.sweep_interval * 2},
            },
            "leads": {
                "task": "leads.tick",
                "schedule": LEAD_TICK_INTERVAL,
                "options": {"expires": LEAD_TICK_INTERVAL},
            },
            "confirm": {
                "task": "texts.confirm",
                "schedule": CONFIRM_INTERVAL,
                "options": {"expires": CONFIRM_INTERVAL},
            },
            "prune": {
                "task": "messages.prune",
                "schedule": PRUNE_INTERVAL,
                "options": {"expires": PRUNE_INTERVAL},
            },
            "crm": {
                "task": "crm.push",
                "schedule": config.crm_push_interval,
                "options": {"expires": max(1.0, config.crm_push_interval * 2)},
            },
            # events answered early that a killed API process left in the intake
            "intake": {
                "task": "intake.drain",
                "schedule": config.intake_sweep_interval,
                "options": {"expires": max(1.0, config.intake_sweep_interval * 2)},
            },
            "retention": {
                "task": "retention.prune",
                "schedule": RETENTION_INTERVAL,
                "options": {"expires": RETENTION_INTERVAL},
            },
            "counters": {  # outcome counters: closed hours folded (docs/stats.md)
                "task": "counters.compact",
                "schedule": config.counters_compact_interval,
                "options": {"expires": config.counters_compact_interval},
            },
        },
        beat_scheduler="worker.runtime.scheduler:LeaderScheduler",  # several beats, one leads
        beat_schedule_filename=str((config.home / "beat-schedule").resolve()),
        timezone="UTC",
    )
    if config.imap_host:  # the reply mailbox (docs/inbox.md), read only when one is set
        app.conf.beat_schedule["inbox"] = {
            "task": "inbox.poll",
            "schedule": config.inbox_poll_interval,
            "options": {"expires": max(1.0, config.inbox_poll_interval)},
        }
    return app


app = make_app()


def runtime() -> Runtime:
    found = current()
    try:
        if found.reload_if_changed():
            log.info("sequences reloaded: %d sequence(s)", len(found.catalog.sequences))
    except CatalogError as exc:
        log.error("sequence files do not validate; keeping the running version:\n%s", exc)
    return found


@app.task(name="step.send")
def send(step_run_id: str) -> str:
    return send_step(runtime(), step_run_id)


@app.task(name="step.send_batch")
def send_batch(step_run_ids: list[str]) -> str:
    results = send_steps(runtime(), step_run_ids)
    return ", ".join(f"{count} {what}" for what, count in _tally(results.values()).items())


def _tally(results: Iterable[str]) -> Counter[str]:
    return Counter(result.split(" (")[0].split(" at ")[0] for result in results)


@app.task(name="dispatch.tick")
def dispatch_tick() -> int:
    """Lease due steps, commit, then enqueue: a rolled-back lease never starts a task. A task
    carries up to `send_batch` steps, in due order, and sends them together.

    Backpressure: at most `dispatch_batch` steps are in flight at once, so every leased step
    is started long before its lease ends and the broker never holds a backlog."""
    found = runtime()
    deployed = deploy_if_changed(found)
    if deployed is not None:
        log.info("deployed new sequence versions: %s", ", ".join(deployed.changed) or "none")
    batches = lease_due(found, utcnow())
    for batch in batches:
        send_batch.delay(batch)
    return sum(map(len, batches))


@app.task(name="sweep.tick")
def sweep_tick() -> str:
    swept = sweep_steps(runtime(), utcnow())
    if swept.unknown:
        log.warning("%d step(s) handed to a provider and never recorded: now unknown",
                    swept.unknown)  # fmt: skip
    return f"requeued {swept.requeued}, unknown {swept.unknown}"


@app.task(name="texts.confirm")
def texts_confirm() -> str:
    """Ask Twilio about texts left `unknown`: a match is recorded sent, never resent."""
    return confirm_unknown_texts(runtime(), utcnow()).summary()


@app.task(name="crm.push")
def crm_push() -> str:
    """Push the CRM outbox: batched, in order per contact; failures wait in the database."""
    found = runtime()
    pushed = push_pending(found.database, found.crm, utcnow(), pace=lambda: found.throttle("crm"),
                          provider=found.config.crm_backend)  # fmt: skip
    if pushed.deferred or pushed.failed:
        log.warning("CRM push: %d pushed, %d to retry, %d refused",
                    pushed.pushed, pushed.deferred, pushed.failed)  # fmt: skip
    return f"pushed {pushed.pushed}, retry {pushed.deferred}, refused {pushed.failed}"


@app.task(name="messages.prune")
def messages_prune() -> str:
    """Drop the copies of emails sent longer ago than NURTURE_COPY_RETENTION_DAYS."""
    return f"pruned {prune_old_copies(runtime(), utcnow())} copies"


@app.task(name="intake.drain")
def intake_drain() -> str:
    return f"{drain_queued(runtime())} queued event(s) applied"


@app.task(name="retention.prune")
def retention_prune() -> str:
    """Delete what is past its retention: pushed CRM changes, old events, their kept keys."""
    pruned = prune_expired(runtime(), utcnow())
    if pruned.problem:
        log.error("retention: %s", pruned.problem)
    return pruned.summary()


@app.task(name="leads.tick")
def leads_tick() -> str:
    """What time alone does: pauses end, scores decay across a line, quiet spells begin.
    Chunks of leads while any are due, for up to LEAD_TICK_SECONDS of the 30 between ticks."""
    woken = wake_due_leads(runtime(), utcnow(), chunk=LEAD_CHUNK, seconds=LEAD_TICK_SECONDS)
    if woken.more_due:
        log.warning("leads.tick: %s; the next tick goes on", woken.summary())
    return woken.summary()


@app.task(name="inbox.poll")
def inbox_poll() -> str:
    """Replies, bounces and complaints from the reply mailbox; safe to overlap itself."""
    from integrations.imap import ImapError
    from worker.inbox.service import poll

    try:
        return poll(runtime()).summary()
    except ImapError as exc:  # the next beat tries again from the stored position
        log.warning("inbox: %s", exc)
        return f"mailbox unavailable: {exc}"


def worker_argv(
    pool: str = "solo", beat: bool = False, concurrency: int | None = None
) -> list[str]:
    argv = ["worker", "--loglevel=INFO", f"--pool={pool}", "--without-gossip", "--without-mingle"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if beat:
        argv.append("--beat")
    return argv


@app.task(name="counters.compact")
def counters_compact() -> int:
    """Fold the outcome counters' closed hours into one row per key."""
    return compact(runtime(), utcnow())
