"""`nurture run|api|worker|beat` and `nurture db upgrade`: starting the processes and
migrating their database."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.common import catalog_failed, err, out, runtime
from worker.config import Settings, settings
from worker.kit.exposition import prepare

app = typer.Typer()
db_app = typer.Typer(help="The database.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Run the database migrations."""
    from worker.store.db import database_url
    from worker.store.migrate import upgrade

    upgrade(database_url(settings()))
    out.print("database is up to date")


def count_in(config: Settings, role: str) -> None:
    """Before anything imports prometheus_client: this role's folder for its processes'
    counters (worker/kit/exposition.py)."""
    prepare((config.metrics_dir or config.home / "metrics") / role)


MetricsPort = Annotated[
    int | None,
    typer.Option(min=0, max=65535, help="Serve this process's /metrics on this port (0: none)."),
]


@app.command()
def run(port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1.")] = 8000) -> None:
    """API, worker and beat in one process, on the embedded defaults; no setup needed."""
    count_in(settings(), f"run-{port}")
    from worker.processes import prepare_local, run_all
    from worker.runtime.process import CatalogError

    try:
        prepared = prepare_local(port)
    except CatalogError as exc:
        catalog_failed(exc)
    if prepared.token:
        out.print(f"API token (NURTURE_API_TOKENS is unset): {prepared.token}", markup=False)
    console = f"Console: http://127.0.0.1:{port}/console"
    if prepared.admin_password:
        console += f" — sign in as admin with one-time password {prepared.admin_password}"
    out.print(console, markup=False, soft_wrap=True)
    outbox = prepared.config.outbox_dir.resolve()
    out.print(f"Nurture on http://127.0.0.1:{port}; outbox: {outbox}", markup=False)
    run_all(prepared.config, port)


@app.command()
def api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="uvicorn worker processes (one per core in production)")
    ] = 1,
) -> None:
    """The HTTP API (production)."""
    count_in(settings(), f"api-{port}")
    from worker.processes import console_users_missing, run_api

    found = runtime()  # the sequence files are checked before the process starts
    missing = console_users_missing(found.config)
    if missing:
        err.print(missing, markup=False)
    run_api(host, port, workers)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option()] = None,
    metrics_port: MetricsPort = None,
    events: Annotated[
        bool, typer.Option("--events", help="Celery task events for Flower (NURTURE_WORKER_EVENTS)")
    ] = False,
) -> None:
    """A Celery worker (production)."""
    config = settings()
    port = config.worker_metrics_port if metrics_port is None else metrics_port
    count_in(config, f"worker-{port}")
    from worker.processes import run_worker

    found = runtime()  # the sequence files are checked before the process starts
    run_worker(concurrency, metrics_port=port, events=events or found.config.worker_events)


@app.command()
def beat(metrics_port: MetricsPort = None) -> None:
    """The scheduler: dispatches due steps every second (run one or more: one leads)."""
    config = settings()
    port = config.beat_metrics_port if metrics_port is None else metrics_port
    count_in(config, f"beat-{port}")
    from worker.processes import run_beat

    run_beat(config, metrics_port=port)
