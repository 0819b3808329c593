"""The database side of a hand-over: one connection held for the batch (no pool checkout per
message), and one short transaction per message that records what the provider said about
the previous message and hands the next one over.

A connection lost before a transaction's commit went out (PostgreSQL restarted, a failover) is
replaced and the transaction run again, for up to RECONNECT_FOR seconds: an acceptance on its
way to the database is worth waiting for, since one never recorded leaves its step `unknown`.
Lost during the commit itself, it is not retried: the commit may have happened.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from types import TracebackType

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from integrations.ports import SendResult
from worker.kit import metrics
from worker.kit.clock import Clock
from worker.runtime.process import Runtime
from worker.sending.claim import Claimed
from worker.sending.record import Answer, record_answer
from worker.store.steps import Accepted, hand_over_one, lock_for_hand_over

log = logging.getLogger("nurture")
RECONNECT_FOR = 30.0
Said = tuple[Claimed, Answer]


class Desk:
    """Where a batch is handed over; what was recorded goes to `results` and `accepted`."""

    def __init__(self, runtime: Runtime, results: dict[str, str], clock: Clock) -> None:
        self.runtime = runtime
        self.results = results
        self.clock = clock
        self.accepted: list[tuple[Claimed, Accepted]] = []
        """The accepted sends, each with what its message row says, for the write-back."""
        self.connection: Connection = runtime.database.connect()
        self._committing = False

    def __enter__(self) -> Desk:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.connection.close()

    def commit(self, said: Said | None, handing: Claimed | None = None) -> bool:
        """One transaction: record what was said about the previous message, and hand the
        next one over (under the leads' locks, like every change to a lead: an exit that read
        the row as `claimed` finishes first, or sees `sending` and leaves it alone). Whether
        the next one was handed over."""
        if said is None and handing is None:
            return False
        deadline = time.monotonic() + RECONNECT_FOR
        while True:
            try:
                found, handed, at = self._once(said, handing)
                break
            except DBAPIError as exc:
                if self._committing or not exc.connection_invalidated:
                    raise
                if time.monotonic() > deadline:
                    raise
                log.warning("database connection lost during a hand-over: reconnecting")
                self._reconnect(deadline)
        if said is not None and found is not None:
            claimed, answer = said
            self.results[claimed.step_run_id] = found
            metrics.count_send(claimed.composed.channel, send_result(answer, found),
                               time.monotonic() - claimed.since)  # fmt: skip
            if isinstance(answer, SendResult):
                message = Accepted(at, answer.provider_message_id, claimed.composed.subject)
                self.accepted.append((claimed, message))
        return handed

    def _once(
        self, said: Said | None, handing: Claimed | None
    ) -> tuple[str | None, bool, datetime]:
        # an acceptance needs only the next lead's lock; a failure goes through its lead's
        # world too: both leads then, in id order
        leads = [handing.lead_id] if handing is not None else []
        if said is not None and not isinstance(said[1], SendResult):
            leads.append(said[0].lead_id)
        found: str | None = None
        now = self.clock()
        self._committing = False
        with self.connection.begin():
            lock_for_hand_over(self.connection, leads)
            if said is not None:
                found = record_answer(self.runtime, self.connection, *said, now)
            handed = handing is not None and hand_over_one(self.connection, handing.step_run_id)
            self._committing = True  # what fails from here on failed in the commit
        return found, handed, now

    def _reconnect(self, deadline: float) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()
        while True:
            try:
                self.connection = self.runtime.database.connect()
                return
            except DBAPIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def send_result(answer: Answer, recorded: str) -> str:
    """The `result` label of `nurture_sends_total`: sent, failed, or deferred (a retry, a
    rate limit, a held provider: the step waits)."""
    if isinstance(answer, SendResult):
        return "sent"
    return "failed" if recorded.startswith("failed") else "deferred"
