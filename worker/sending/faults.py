"""Fault points for tests: a send task stops at a named point for `fault_seconds`
(NURTURE_FAULT_POINT, NURTURE_FAULT_SECONDS, NURTURE_FAULT_AFTER) so a test can kill the worker
exactly there. Unset, they cost one comparison."""

from __future__ import annotations

import logging
import time

from worker.runtime.process import Runtime

log = logging.getLogger("nurture")
POINTS = ("after_claim", "mid_batch", "after_send", "before_record")


def fault(runtime: Runtime, point: str, message: int | None = None) -> None:
    """Stop here when the configured point is `point` (and, for a point inside the batch, this
    is the configured message: 1 = the first)."""
    config = runtime.config
    if config.fault_point != point:
        return
    if message is not None and message != config.fault_after:
        return
    log.warning("fault point %s reached: stopping %.0f s", point, config.fault_seconds)
    time.sleep(config.fault_seconds)


def stops_at(runtime: Runtime, point: str, message: int) -> bool:
    """Whether `point` is set for this message of the batch."""
    config = runtime.config
    return config.fault_point == point and message == config.fault_after
