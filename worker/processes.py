"""The processes: `nurture run` (everything in one, embedded defaults) and the production
`api`, `worker` and `beat`.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from sqlalchemy import Engine as Database

from worker.accounts.users import create_first_admin, has_users
from worker.config import Settings, settings
from worker.kit import exposition
from worker.kit.signing import secret
from worker.runtime import heartbeat
from worker.runtime.process import build, current
from worker.store.db import database_url, engine_for
from worker.store.migrate import upgrade
from worker.support.deploy import deploy

NO_USERS = (
    "The console (/console) has no users yet: add one with "
    "`nurture users add NAME --role admin` (the password is asked for, or read from stdin)"
)


@dataclass(frozen=True)
class Prepared:
    """What `nurture run` prints before it starts."""

    config: Settings
    token: str | None
    """The API token kept in the home folder, when NURTURE_API_TOKENS is unset."""
    admin_password: str | None
    """The first admin's one-time password, when this start created the account."""


def prepare_home(config: Settings) -> str | None:
    """Create `.nurture/`, its secret key and, when NURTURE_API_TOKENS is unset, an API token
    (returned so `run` can print it). Migrates the database."""
    config.home.mkdir(parents=True, exist_ok=True)
    secret(config)
    token = None
    if not config.api_tokens:
        path = config.home / "api_token"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        token = path.read_text().strip()
    upgrade(database_url(config))
    return token


def prepare_local(port: int) -> Prepared:
    """`nurture run`: the settings of one process serving on 127.0.0.1:`port`, its home
    prepared (`prepare_home`), the sequence files deployed, and on a fresh installation the
    console's first admin (`create_first_admin`). Raises CatalogError when the files have
    problems."""
    # links in messages (unsubscribe, tracking) must point at this server unless told otherwise
    os.environ.setdefault("NURTURE_PUBLIC_URL", f"http://127.0.0.1:{port}")
    settings.cache_clear()
    config = settings()
    token = prepare_home(config)
    runtime = build()
    deploy(runtime, reload=False)
    return Prepared(config, token, create_first_admin(runtime.database))


def console_users_missing(config: Settings) -> str | None:
    """For `nurture api`: what to say when nobody can sign in to the console (production
    creates no account by itself); None when somebody can, or the database is not migrated."""
    from sqlalchemy import inspect

    database = engine_for(database_url(config))
    if not inspect(database).has_table("users") or has_users(database):
        return None
    return NO_USERS


def serve_api(host: str, port: int) -> uvicorn.Server:
    from worker.api.app import create_app

    return uvicorn.Server(uvicorn.Config(create_app(), host=host, port=port, log_level="info"))


def run_api(host: str, port: int, workers: int = 1) -> None:
    """`nurture api`: one process, or `workers` uvicorn worker processes on one port (a batch
    of events keeps one core busy; production gives the API one worker per core)."""
    if workers <= 1:
        serve_api(host, port).run()
        return
    uvicorn.run("worker.api.app:create_app", factory=True, host=host, port=port,
                workers=workers, log_level="info")  # fmt: skip


def run_all(config: Settings, port: int) -> None:
    """API on 127.0.0.1, worker and beat in this process (Celery's solo pool)."""
    from celery.beat import Service

    from worker.tasks import app, worker_argv

    server = serve_api("127.0.0.1", port)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    # beat in a thread, not the child process `--beat` forks: SQLite's open files do not
    # survive a fork, and beat's lease (runtime/scheduler.py) lives in the database
    beat = Service(app)
    threading.Thread(target=beat.start, name="beat", daemon=True).start()
    heartbeat.install(app, _database, worker=("worker", "beat"), beat=False)
    try:
        app.worker_main(worker_argv(pool="solo"))
    finally:
        beat.stop()
        server.should_exit = True
        thread.join(timeout=5)


def run_worker(concurrency: int | None, metrics_port: int = 0, events: bool = False) -> None:
    """`nurture worker`; with `events`, Celery task events for Flower (docs/deploy.md)."""
    from worker.tasks import app, worker_argv

    heartbeat.install(app, _database, worker=("worker",), beat=False)
    exposition.serve(settings().metrics_host, metrics_port)
    argv = worker_argv(pool="prefork", concurrency=concurrency)
    if events:
        app.conf.task_send_sent_event = True  # the sends this worker queues (dispatch.tick)
        argv.append("--task-events")
    app.worker_main(argv)


def run_beat(config: Settings, metrics_port: int = 0) -> None:
    from worker.tasks import app

    heartbeat.install(app, _database, beat=True)
    exposition.serve(config.metrics_host, metrics_port)
    config.home.mkdir(parents=True, exist_ok=True)
    app.start(["beat", "--loglevel=INFO", f"--schedule={Path(config.home) / 'beat-schedule'}"])


def _database() -> Database:
    return current().database
