"""The one backoff: how long to wait before trying again after a failure, doubling and jittered."""

from __future__ import annotations

import random
from datetime import timedelta


def backoff(
    failures: int, *, first: float, longest: float, retry_after: float | None = None
) -> timedelta:
    """`retry_after` seconds (at least one) when the other side said when; else `first`
    seconds after the first failure, doubling with each one after, capped at `longest`, with
    jitter so a storm does not come back whole. `failures` counts this one."""
    if retry_after is not None:
        return timedelta(seconds=max(1.0, retry_after))
    base = min(longest, first * 2 ** max(0, failures - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))
