"""Sending step runs: claim, check, render, hand over, record (SPEC §8).

A send task carries a few step runs (a batch from one dispatcher tick); each phase treats them
together, in one transaction, with their leads locked in id order:

1. Claim (`claim`): re-read the rows and the leads' worlds, run the send-time checks; a wait
   puts the row back with its new due time, a finish records it; otherwise render every part
   and move the row `queued → claimed` by compare-and-set.
2. Hand over (`deliver`): `claimed → sending` by compare-and-set, committed before the provider
   is called. An exit or pause committed before this point stops the step.
3. Send each message, then record every outcome (`record`). A crash between the provider
   accepting and the record leaves the row `sending`: the sweeper marks it `unknown`, never
   resent.

A step that breaks a phase for its batch (a bug, a row that vanished) is retried alone, so it
cannot hold the others back.
"""

from __future__ import annotations

import logging
import time

from worker.kit.clock import Clock, utcnow
from worker.runtime.process import Runtime
from worker.sending.claim import claim
from worker.sending.deliver import deliver_all
from worker.sending.record import record

log = logging.getLogger("nurture")


def send_step(runtime: Runtime, step_run_id: str, clock: Clock = utcnow) -> str:
    """Run one step to its end (or its next wait). Returns what happened, for logs and tests."""
    return send_steps(runtime, [step_run_id], clock)[step_run_id]


def send_steps(runtime: Runtime, step_run_ids: list[str], clock: Clock = utcnow) -> dict[str, str]:
    """Run several steps to their end (or next wait): what happened to each, by id."""
    ids = list(dict.fromkeys(step_run_ids))
    try:
        results, claimed = claim(runtime, ids, clock)
    except Exception:
        if len(ids) == 1:
            raise
        log.exception("claiming %d steps together failed: claiming each alone", len(ids))
        return {step_run_id: _alone(runtime, step_run_id, clock) for step_run_id in ids}
    if not claimed:
        return results
    fault(runtime, "after_claim")
    delivered = deliver_all(runtime, claimed, results)
    if delivered:
        fault(runtime, "after_send")
        results.update(record(runtime, delivered, clock))
    return results


def _alone(runtime: Runtime, step_run_id: str, clock: Clock) -> str:
    try:
        return send_step(runtime, step_run_id, clock)
    except Exception as exc:
        log.exception("step run %s could not be sent", step_run_id)
        return f"error ({exc})"


def fault(runtime: Runtime, point: str) -> None:
    """Tests kill a worker here: between the claim and the hand-over, or between the
    provider's acceptance and the record."""
    if runtime.config.fault_point == point:
        time.sleep(runtime.config.fault_seconds)
