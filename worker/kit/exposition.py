"""Where a process's counters go and how they are served (docs/metrics.md).

`nurture api|worker|beat|run` call `prepare` first thing, before prometheus_client is imported:
it points PROMETHEUS_MULTIPROC_DIR at a folder of the role's own (cleared: counters start at
zero with the process, as Prometheus expects), so each uvicorn worker and Celery prefork child
writes its counts to its own files there, and `registry()` adds them all up at a scrape.
Without a folder (tests, one-off commands) the counters are this process's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(folder: Path) -> Path | None:
    """Use `folder` (emptied) for this process and its children's counters. Only before
    prometheus_client is imported: after (a command run inside another program, a test) the
    counters stay this process's own and None is returned."""
    if "prometheus_client" in sys.modules and ENV not in os.environ:
        return None
    folder = folder.resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(folder)
    return folder


def registry() -> CollectorRegistry:
    """The counters of every process of this role (multiprocess), or of this process."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    folder = os.environ.get(ENV)
    if not folder:
        from worker.kit.metrics import REGISTRY

        return REGISTRY
    found = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(found, folder)  # type: ignore[no-untyped-call]
    return found


def process_ended(pid: int) -> None:
    """A child process ended (Celery's `worker_process_shutdown`): drop its live gauges; its
    counters stay counted."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(host: str, port: int) -> None:
    """Serve `registry()` at http://host:port/metrics from a daemon thread (`nurture worker`
    and `nurture beat`; port 0: not at all)."""
    if port <= 0:
        return
    from prometheus_client import start_http_server

    from worker.kit.metrics import initialize

    initialize()
    try:
        start_http_server(port, addr=host, registry=registry())
    except OSError as exc:  # another process on the port: say which setting moves it
        raise SystemExit(
            f"nurture: cannot serve /metrics on {host}:{port} ({exc.strerror}): choose another "
            "port with --metrics-port or NURTURE_WORKER_METRICS_PORT / "
            "NURTURE_BEAT_METRICS_PORT (0: no /metrics)"
        ) from exc
