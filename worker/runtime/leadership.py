"""Which of several beats leads: the one holding the `beat` lease in the database. The leader
renews it every `renew` seconds; the others try to take it as often, and one succeeds once the
leader's lease has run out (it died, or lost the database). A leader trusts its lease only
until `lease` seconds after it *asked* for it, minus a margin, so it has stopped publishing
before the database lets another beat take over.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from worker.kit.clock import utcnow
from worker.store.db import transaction
from worker.store.leases import lease_holder, release_lease, take_lease

log = logging.getLogger("nurture.beat")
BEAT_LEASE = "beat"


def holder_name() -> str:
    """This process among the beats: host, pid and a random tail (a restarted process with a
    reused pid is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Leadership:
    database: Engine
    lease: float = 10.0
    """Seconds a taken or renewed lease lasts."""
    renew: float = 2.0
    """Seconds between renewals (leader) or attempts (standby)."""
    name: str = BEAT_LEASE
    holder: str = field(default_factory=holder_name)
    clock: Callable[[], float] = time.monotonic
    term: int = 0
    """How many times this process has become the leader (a scheduler reloads on a change)."""
    _held: bool = False
    _valid_until: float = 0.0
    _attempted_at: float = float("-inf")
    _seen: str | None = None

    @property
    def margin(self) -> float:
        """Lease time a publication must still have left: never publish at its very end."""
        return min(1.0, self.lease / 5)

    @property
    def leading(self) -> bool:
        return self._held and self.clock() < self._valid_until - self.margin

    def keep(self) -> float:
        """Renew (leader) or try to take (standby) when `renew` seconds have passed since the
        last attempt; the seconds until the next one is due."""
        if self.clock() - self._attempted_at >= self.renew:
            self._attempt()
        return max(0.0, self._attempted_at + self.renew - self.clock())

    def may_publish(self) -> bool:
        """Whether a periodic duty may go out now: the lease is renewed first when the last
        renewal is older than `renew` seconds, and must have more than `margin` left."""
        if self.clock() - self._attempted_at >= self.renew:
            self._attempt()
        return self.leading

    def release(self) -> None:
        """A clean stop: give the lease up so a standby takes over at its next attempt."""
        if not self._held:
            return
        self._held = False
        try:
            with transaction(self.database) as session:
                release_lease(session, self.name, self.holder, utcnow())
            log.info("beat %s: stopped leading and released the lease", self.holder)
        except SQLAlchemyError as exc:
            log.warning("beat %s: could not release the lease (%s): it runs out by itself",
                        self.holder, exc)  # fmt: skip

    def _attempt(self) -> None:
        asked = self._attempted_at = self.clock()
        try:
            with transaction(self.database) as session:
                won = take_lease(session, self.name, self.holder, self.lease, utcnow())
                current = None if won else lease_holder(session, self.name)
        except SQLAlchemyError as exc:
            if self._held and not self.leading:
                self._held = False
                log.error("beat %s: the lease ran out while the database was unreachable "
                          "(%s): stopped publishing", self.holder, exc)  # fmt: skip
            elif self._held:
                log.warning("beat %s: could not renew the lease (%s); publishing for at most "
                            "%.1f s more", self.holder, exc,
                            self._valid_until - self.margin - self.clock())  # fmt: skip
            return
        if won:
            self._valid_until = asked + self.lease
            if not self._held:
                self._held, self.term = True, self.term + 1
                previous = f" (after {self._seen})" if self._seen else ""
                log.warning("beat %s: leading now%s: publishing the periodic duties",
                            self.holder, previous)  # fmt: skip
            return
        other = current[0] if current else None
        if self._held:
            self._held = False
            log.error("beat %s: lost the lease to %s: stopped publishing", self.holder, other)
        elif other != self._seen:
            log.warning("beat %s: standing by while %s leads", self.holder, other)
        self._seen = other
