"""Sending step runs: claim, check, render, hand over, record (SPEC §8).

A send task carries a few step runs (a batch from one dispatcher tick):

1. Claim (`claim`), in one transaction with their leads locked in id order: re-read the rows
   and the leads' worlds, run the send-time checks (a send claimed or handed over and not
   recorded yet counts for the caps, one claimed earlier in the batch too); a wait puts the
   row back with its new due time, a finish records it; otherwise render every part and move
   the row `queued → claimed` by compare-and-set.
2. Hand over (`deliver`), one message at a time: `claimed → sending` by compare-and-set,
   committed just before its provider is called, in the same transaction that records what
   the provider said about the previous one (an acceptance: its message row, with the
   provider's id and time). An exit or pause committed before the hand-over stops the step.
   A crash between the provider accepting and that record leaves one row `sending` with no
   message: the sweeper marks it `unknown`, never resent.
3. Write back (`complete`): the accepted sends turn `sent` in their leads' worlds (next step,
   timeline, CRM outbox), together; if the worker dies first, the sweeper does it, once.

A step that breaks the claim for its batch (a bug, a row that vanished) is retried alone, so
it cannot hold the others back.
"""

from __future__ import annotations

import logging

from worker.kit.clock import Clock, utcnow
from worker.runtime.process import Runtime
from worker.sending.claim import claim
from worker.sending.complete import write_back
from worker.sending.deliver import hand_over
from worker.sending.faults import fault

log = logging.getLogger("nurture")
__all__ = ["fault", "send_step", "send_steps"]


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
    accepted = hand_over(runtime, claimed, results, clock)
    if accepted:
        fault(runtime, "before_record")
        results.update(write_back(runtime, accepted, clock))
    return results


def _alone(runtime: Runtime, step_run_id: str, clock: Clock) -> str:
    try:
        return send_step(runtime, step_run_id, clock)
    except Exception as exc:
        log.exception("step run %s could not be sent", step_run_id)
        return f"error ({exc})"
