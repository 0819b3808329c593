"""Rate limits per provider account: shared through a real Redis by limiters that share
nothing else, in-process on the embedded default, bounded waits, and the policy's
`rate_limits` applied to real sends."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from integrations.ports import RateLimited, TemporaryError
from tests.helpers import make_runtime
from tests.library import WELCOME_DAY_ONE, welcome_project
from worker.api.app import create_app
from worker.config import Settings
from worker.definitions.models import RateLimits
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.runtime.process import Runtime
from worker.runtime.ratelimit import (
    Limiter,
    LocalLimiter,
    RedisLimiter,
    account,
    limiter_for,
    rate_of,
)
from worker.sending.service import send_step, send_steps
from worker.store.db import transaction
from worker.store.steps import claim_due

pytestmark = pytest.mark.integration


def take(limiter: Limiter, key: str, rate: float, count: int, stamps: list[float]) -> None:
    for _ in range(count):
        limiter.acquire(key, rate)
        stamps.append(time.monotonic())


def most_in_one_second(stamps: list[float]) -> int:
    ordered = sorted(stamps)
    return max(sum(1 for t in ordered if start <= t < start + 1.0) for start in ordered)


def test_two_workers_with_their_own_limiters_share_one_rate_through_redis(
    redis_url: str,
) -> None:
    key = f"email:relay-{uuid.uuid4().hex[:8]}"
    per_worker: list[list[float]] = [[], []]
    # one Redis connection each and nothing in common in the process: only Redis is shared
    workers = [
        threading.Thread(target=take, args=(RedisLimiter.from_url(redis_url), key, 10.0, 12, s))
        for s in per_worker
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    elapsed = time.monotonic() - started
    stamps = per_worker[0] + per_worker[1]
    assert len(stamps) == 24
    # 24 sends at 10/s: the first at once, then one every 0.1 s: about 2.3 s, not 1.2 s
    assert 2.0 <= elapsed <= 4.0, elapsed
    assert most_in_one_second(stamps) <= 11
    assert all(len(s) == 12 for s in per_worker)


def test_accounts_do_not_share_a_rate(redis_url: str) -> None:
    limiter = RedisLimiter.from_url(redis_url)
    stamps: dict[str, list[float]] = {"sms:AC1": [], "sms:AC2": []}
    prefix = uuid.uuid4().hex[:8]
    workers = [
        threading.Thread(target=take, args=(limiter, f"{prefix}:{key}", 10.0, 8, found))
        for key, found in stamps.items()
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert time.monotonic() - started < 1.3  # ~0.7 s each, side by side


@pytest.mark.parametrize("kind", ["redis", "local"])
def test_a_wait_beyond_the_bound_reserves_nothing_and_is_temporary(
    kind: str, redis_url: str
) -> None:
    limiter: Limiter = RedisLimiter.from_url(redis_url) if kind == "redis" else LocalLimiter()
    key = f"crm:{uuid.uuid4().hex[:8]}"
    assert limiter.acquire(key, 2.0, max_wait=0.2) == 0.0
    with pytest.raises(RateLimited) as raised:
        limiter.acquire(key, 2.0, max_wait=0.2)  # the next slot is 0.5 s away
    assert isinstance(raised.value, TemporaryError)
    assert raised.value.code == "rate_limited"
    assert raised.value.retry_after is not None
    assert 0.3 <= raised.value.retry_after <= 0.55
    waited = limiter.acquire(key, 2.0, max_wait=1.0)  # the refused call took no slot
    assert 0.3 <= waited <= 0.55


def test_the_in_process_limiter_spaces_threads_of_one_worker() -> None:
    limiter = LocalLimiter()
    stamps: list[float] = []
    workers = [
        threading.Thread(target=take, args=(limiter, "email:outbox", 20.0, 5, stamps))
        for _ in range(3)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert len(stamps) == 15
    assert 0.6 <= time.monotonic() - started <= 2.0  # 14 intervals of 50 ms


def test_the_limiter_follows_the_broker_and_keys_follow_the_account(redis_url: str) -> None:
    assert isinstance(limiter_for(Settings(broker_url=redis_url)), RedisLimiter)
    assert isinstance(limiter_for(Settings()), LocalLimiter)  # the embedded filesystem broker
    smtp = Settings(email_backend="smtp", smtp_host="mail.acme.example", smtp_port=587,
                    smtp_username="nurture")  # fmt: skip
    assert (
        account(smtp, "email") == account(smtp, "notify") == "email:nurture@mail.acme.example:587"
    )
    twilio = Settings(sms_backend="twilio", twilio_account_sid="AC123")
    assert account(twilio, "sms") == "sms:AC123"
    assert account(twilio, "whatsapp") == "whatsapp:AC123"
    assert account(Settings(crm_backend="hubspot"), "crm_task") == "crm:hubspot"
    limits = RateLimits(email="600/m", crm="9/s")
    assert rate_of(limits, "email") == rate_of(limits, "notify") == 10.0
    assert rate_of(limits, "crm_task") == 9.0
    assert rate_of(limits, "sms") is None


POLICY = """
kind: policy
rate_limits: {email: 5/s}
"""
TEMPLATE = """---
subject: "Hello"
transactional: true
---
<p>Hi</p>
"""
FILES = {**welcome_project(WELCOME_DAY_ONE, TEMPLATE), "sequences/policy.yaml": POLICY}


def limited_runtime(folder: Path) -> Runtime:
    """A runtime on SQLite whose policy sends at most five emails a second."""
    return make_runtime(folder, f"sqlite:///{folder / 'nurture.db'}", FILES)


def test_the_policy_rate_spaces_real_sends_across_threads(tmp_path: Path) -> None:
    runtime = limited_runtime(tmp_path)
    runtime.config = runtime.config.model_copy(update={"api_tokens": "t"})
    client = TestClient(create_app(lambda: runtime))
    for number in range(6):
        event = {"type": "signed_up", "lead": {"email": f"lead{number}@example.com"}}
        assert (
            client.post("/v1/events", json=event, headers={"Authorization": "Bearer t"}).status_code
            == 202
        )
    now = datetime.now(UTC)
    with transaction(runtime.database) as session:
        due = claim_due(session, now, 100)
    assert len(due) == 6
    outcomes: list[str] = []
    started = time.monotonic()
    workers = [
        threading.Thread(target=lambda s=step: outcomes.append(send_step(runtime, s, lambda: now)))
        for step in due
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    elapsed = time.monotonic() - started
    assert outcomes == ["sent"] * 6
    assert elapsed >= 0.9  # six sends at 5/s: five intervals of 0.2 s
    assert isinstance(runtime.limiter, LocalLimiter)
    assert len(list((runtime.config.outbox_dir / "email").glob("*.eml"))) == 6


def test_a_batch_on_a_limited_channel_waits_for_each_slot_before_handing_that_step_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = limited_runtime(tmp_path)
    now = datetime.now(UTC)
    for number in range(4):
        payload = {"type": "signed_up", "lead": {"email": f"lead{number}@example.com"}}
        with transaction(runtime.database) as session:
            ingest(session, runtime.engine, EventIn.model_validate(payload), now)
    with transaction(runtime.database) as session:
        due = claim_due(session, now, 100)
    seen: list[dict[str, int]] = []

    def watched(found: Runtime, channel: str) -> float:
        with runtime.database.connect() as connection:
            rows = connection.execute(text("SELECT status, count(*) FROM step_runs GROUP BY 1"))
            seen.append({str(row[0]): int(row[1]) for row in rows})
        return original(found, channel)

    original = Runtime.throttle
    monkeypatch.setattr(Runtime, "throttle", watched)
    results = send_steps(runtime, due, lambda: now)
    assert list(results.values()) == ["sent"] * 4
    # a step waiting for its slot is only claimed, not handed over: a worker killed in the
    # wait leaves it to the sweeper, which sends it later (the ones already handed to the
    # provider are `sending` until the batch is recorded)
    assert seen == [{"claimed": 4}, {"claimed": 3, "sending": 1}, {"claimed": 2, "sending": 2},
                    {"claimed": 1, "sending": 3}]  # fmt: skip


def test_a_step_booked_beyond_the_longest_wait_goes_back_to_pending_without_an_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = limited_runtime(tmp_path)
    now = datetime.now(UTC)
    payload = {"type": "signed_up", "lead": {"email": "ana@example.com"}}
    with transaction(runtime.database) as session:
        ingest(session, runtime.engine, EventIn.model_validate(payload), now)
    with transaction(runtime.database) as session:
        [step] = claim_due(session, now, 100)

    def booked(found: Runtime, channel: str) -> float:
        raise RateLimited("booked", code="rate_limited", retry_after=30.0)

    monkeypatch.setattr(Runtime, "throttle", booked)
    assert send_steps(runtime, [step], lambda: now)[step].startswith("retry at")
    with runtime.database.connect() as connection:
        status, attempts, due_at = connection.execute(
            text("SELECT status, attempts, due_at FROM step_runs WHERE id = :id"), {"id": step}
        ).one()
    assert (status, attempts) == ("pending", 0)  # the attempt the claim counted is given back
    waited = datetime.fromisoformat(str(due_at)).replace(tzinfo=UTC) - now
    assert timedelta(seconds=30) <= waited <= timedelta(seconds=36)
    assert not list((runtime.config.outbox_dir / "email").glob("*.eml"))


def test_redis_keys_expire_once_the_account_is_idle(redis_url: str) -> None:
    key = f"email:{uuid.uuid4().hex[:8]}"
    RedisLimiter.from_url(redis_url).acquire(key, 100.0)
    ttl = redis.Redis.from_url(redis_url).pttl(f"nurture:rate:{key}")
    assert 0 < ttl <= 1100
