"""Heartbeats of `nurture worker` and `nurture beat` (`nurture_heartbeat_timestamp_seconds`,
`nurture_processes_alive`): a row per process written every HEARTBEAT_SECONDS.

The worker writes from its main process on Celery's own timer (a bootstep: no thread, so
nothing is held when the prefork pool forks); beat, which has no timer to share, from a daemon
thread started when its scheduler starts (`beat_init`). A failed write is logged and tried
again at the next beat: the metric then shows the gap.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import Celery, bootsteps
from celery.signals import beat_init, worker_process_shutdown
from sqlalchemy import Engine as Database

from worker.kit.clock import utcnow
from worker.kit.exposition import process_ended
from worker.store.db import transaction
from worker.store.heartbeats import write_heartbeat

log = logging.getLogger("nurture")
HEARTBEAT_SECONDS = 15.0


class Heart:
    """One process's heartbeat under `role`."""

    def __init__(self, database: Callable[[], Database], role: str) -> None:
        self.database = database
        self.role = role
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at: datetime = utcnow()

    def beat(self) -> None:
        try:
            with transaction(self.database()) as session:
                write_heartbeat(session, self.role, self.host, self.pid, self.started_at, utcnow())
        except Exception:  # the next beat tries again; the gap shows in the metric
            log.exception("heartbeat (%s): could not write it", self.role)


def beat_forever(heart: Heart, stop: threading.Event, every: float = HEARTBEAT_SECONDS) -> None:
    while True:
        heart.beat()
        if stop.wait(every):
            return


def install(
    app: Celery, database: Callable[[], Database], *, worker: tuple[str, ...] = (), beat: bool
) -> None:
    """Heartbeats for the processes `app` is about to run: the worker's main process beats for
    the roles in `worker` (a bootstep on its timer; `nurture run` names beat there too, since
    its beat is a thread of that process), and a standalone beat's from a thread
    (`beat_init`). Also forgets a prefork child's live metrics when it ends."""
    if worker:

        class Heartbeat(bootsteps.StartStopStep):
            requires = ("celery.worker.components:Timer",)

            def __init__(self, parent: Any, **kwargs: Any) -> None:
                super().__init__(parent, **kwargs)
                self.hearts = [Heart(database, role) for role in worker]
                self.timer: Any = None

            def start(self, parent: Any) -> None:
                self.beat()
                self.timer = parent.timer.call_repeatedly(HEARTBEAT_SECONDS, self.beat)

            def beat(self) -> None:
                for heart in self.hearts:
                    heart.beat()

            def stop(self, parent: Any) -> None:
                if self.timer is not None:
                    self.timer.cancel()

        app.steps["worker"].add(Heartbeat)
        worker_process_shutdown.connect(_child_ended, weak=False)
    if beat:

        def started(**_: Any) -> None:
            heart = Heart(database, "beat")
            threading.Thread(
                target=beat_forever, args=(heart, threading.Event()), name="heartbeat",
                daemon=True,
            ).start()  # fmt: skip

        beat_init.connect(started, weak=False)


def _child_ended(pid: int | None = None, **_: Any) -> None:
    process_ended(pid or os.getpid())
