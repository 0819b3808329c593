"""Plain helpers the tests share (the fixtures built on them are in tests/conftest.py): free
ports, databases and runtimes for the tests that need servers, and the engine's simulated
timelines for the ones that do not."""

from __future__ import annotations

import asyncio
import socket
import textwrap
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from worker.authoring.simulate import simulate
from worker.config import Settings
from worker.definitions.catalog import Catalog
from worker.engine.state import Entry, Event, Lead
from worker.runtime.process import Runtime, build
from worker.store.migrate import upgrade

T = TypeVar("T")


def run_async(coroutine: Coroutine[object, object, T]) -> T:
    """`asyncio.run` on a thread of its own: the browser tests' Playwright keeps an event loop
    running on the main thread for the whole session, and `asyncio.run` refuses to nest."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


# -- servers, databases, runtimes --------------------------------------------------------------


def free_port() -> int:
    # aiosmtpd 1.4 cannot bind port 0: pick a free one first
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fresh_database(server_url: str) -> str:
    """A new, empty database on the test PostgreSQL server."""
    import uuid

    import sqlalchemy

    name = f"n_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


def write_project(folder: Path, files: Mapping[str, str]) -> None:
    """Write `files` (paths under `folder` → contents, dedented) into `folder`."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))


def make_runtime(
    folder: Path,
    database_url: str,
    files: Mapping[str, str],
    *,
    smtp_port: int | None = None,
) -> Runtime:
    """A project in `folder` (paths → contents under it), a migrated database, a runtime."""
    write_project(folder, files)
    config = Settings(
        home=folder / ".nurture",
        database_url=database_url,
        sequences_dir=folder / "sequences",
        templates_dir=folder / "templates",
        outbox_dir=folder / "outbox",
    )
    if smtp_port is not None:
        config = config.model_copy(
            update={"email_backend": "smtp", "smtp_host": "127.0.0.1", "smtp_port": smtp_port}
        )
    upgrade(database_url)
    return build(config)


# -- the engine on the simulator's virtual clock -----------------------------------------------


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


CatalogFactory = Callable[..., Catalog]


def lead(**fields: object) -> Lead:
    values: dict[str, object] = {"id": "lead-1", "email": "ana@example.com"}
    values.update(fields)
    return Lead(**values)  # type: ignore[arg-type]


def timeline(
    catalog: Catalog,
    who: Lead,
    events: Sequence[tuple[str, str, Mapping[str, object]]] | None = None,
    *,
    start: str,
    until: str = "2027-06-01T00:00:00Z",
    sequences: list[str] | None = None,
) -> list[Entry]:
    evs = [Event(t, utc(at), dict(props)) for t, at, props in events or []]
    return simulate(
        catalog, who, events=evs, start=utc(start), until=utc(until), sequences=sequences
    )


def sends(entries: list[Entry]) -> list[tuple[str, str | None, str]]:
    """(UTC time, step, action) of every send, crm_task and notify."""
    return [
        (e.at.strftime("%Y-%m-%dT%H:%M"), e.step, e.action)
        for e in entries
        if e.action in ("send", "crm_task", "notify")
    ]


def daytime_zone() -> str:
    """A zone where it is now about noon: the tests that run on the real clock (inbound webhooks
    stamp real time) must not have their texts held by SMS quiet hours (21:00–08:00 local)."""
    offset = 12 - datetime.now(UTC).hour
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


# -- Prometheus text ----------------------------------------------------------------------------


def samples(exposition: str | bytes) -> dict[str, float]:
    """`name{labels}` → value for every sample of a /metrics answer."""
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found
