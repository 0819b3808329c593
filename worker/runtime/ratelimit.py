"""Rate limits per provider account (policy `rate_limits`), shared by every worker.

A GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): each send
reserves the next free slot of its account and sleeps until it. With Redis as the broker the
slot lives in Redis and one Lua script reserves it atomically, on the Redis server's clock, so
every worker process on every host shares one stream; on the embedded defaults it lives in the
process. A send that would wait longer than `max_wait` reserves nothing and raises
`RateLimited` (a temporary error: the step is retried later), so a worker never sits on a
message for long. A 09:00 burst thus leaves as a steady stream instead of provider 429s.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Protocol

import redis

from integrations.ports import RateLimited
from worker.definitions.models import rate_per_second

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.definitions.models import RateLimits

MAX_WAIT = 10.0
"""Seconds a send may wait for its slot before it is handed back as a temporary failure."""
PREFIX = "nurture:rate:"

# KEYS[1]: the account's theoretical arrival time (µs, Redis clock). ARGV: the interval between
# sends and the longest wait, in µs. Returns {1, wait} with the slot reserved, or {0, wait}
# without, when the wait would be too long.
_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > max_wait then return {0, wait} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX',
           math.ceil((next_tat - now) / 1000) + 1000)
return {1, wait}
"""


class Limiter(Protocol):
    def acquire(self, key: str, rate: float, max_wait: float = MAX_WAIT) -> float:
        """Wait for the next slot of `key` at `rate` per second; the seconds waited. Raises
        RateLimited (reserving nothing) when the slot is more than `max_wait` away."""
        ...


class LocalLimiter:
    """One process's slots: the embedded default, where one process is every worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def acquire(self, key: str, rate: float, max_wait: float = MAX_WAIT) -> float:
        interval = 1.0 / rate
        with self._lock:
            now = time.monotonic()
            slot = max(self._next.get(key, now), now)
            wait = slot - now
            if wait > max_wait:
                raise _used_up(key, rate, wait)
            self._next[key] = slot + interval
        if wait > 0:
            time.sleep(wait)
        return wait


class RedisLimiter:
    """Slots kept in Redis: every process with the same Redis shares them."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script = client.register_script(_GCRA)

    @classmethod
    def from_url(cls, url: str) -> RedisLimiter:
        return cls(redis.Redis.from_url(url, socket_timeout=5.0))

    def acquire(self, key: str, rate: float, max_wait: float = MAX_WAIT) -> float:
        interval_us = max(1, round(1_000_000 / rate))
        try:
            reserved, wait_us = self._script(
                keys=[PREFIX + key], args=[interval_us, round(max_wait * 1e6)]
            )
        except redis.RedisError as exc:  # nothing was sent: the step retries
            raise RateLimited(f"rate limiter unavailable: {exc}", code="rate_limiter") from exc
        wait = int(wait_us) / 1_000_000
        if not reserved:
            raise _used_up(key, rate, wait)
        if wait > 0:
            time.sleep(wait)
        return wait


def _used_up(key: str, rate: float, wait: float) -> RateLimited:
    """RateLimited (a TemporaryError) saying when the account has a free slot again."""
    message = f"rate limit of {rate:g}/s for {key} is booked for the next {wait:.1f}s"
    return RateLimited(message, code="rate_limited", retry_after=wait)


def limiter_for(config: Settings) -> Limiter:
    """Redis when the broker is Redis (every worker shares it), else this process."""
    url = config.broker_url or ""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisLimiter.from_url(url)
    return LocalLimiter()


def account(config: Settings, channel: str) -> str:
    """The provider account a send of `channel` spends from: the limit is the provider's."""
    if channel in ("email", "notify"):
        if config.email_backend == "smtp":
            return f"email:{config.smtp_username or ''}@{config.smtp_host}:{config.smtp_port}"
        return "email:outbox"
    if channel in ("sms", "whatsapp"):
        if config.sms_backend == "twilio":
            return f"{channel}:{config.twilio_account_sid or ''}"
        return f"{channel}:outbox"
    return f"crm:{config.crm_backend}"


def rate_of(limits: RateLimits, channel: str) -> float | None:
    """Sends per second for `channel` from the policy; None when it sets no limit. Internal
    alerts (`notify`) spend from the email account; CRM tasks from the CRM's."""
    field = {"notify": "email", "crm_task": "crm"}.get(channel, channel)
    rate: str | None = getattr(limits, field, None)
    return rate_per_second(rate) if rate else None
