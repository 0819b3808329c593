"""Real servers for integration tests: an aiosmtpd sink that keeps what arrived."""

from __future__ import annotations

import email
import socket
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from worker.config import Settings
from worker.runtime.process import Runtime, build
from worker.store.migrate import upgrade


def free_port() -> int:
    # aiosmtpd 1.4 cannot bind port 0: pick a free one first
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Sink:
    """Messages as the SMTP server received them, parsed; `reply` scripts the next answers."""

    messages: list[Message] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def step_runs(self) -> list[str]:
        with self.lock:
            return [str(m["X-Nurture-Step-Run"]) for m in self.messages]


@pytest.fixture
def smtp_sink() -> Iterator[Sink]:
    sink = Sink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    from tests.integration.servers import postgres

    with postgres() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.integration.servers import redis

    with redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


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


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nurture.db'}"
    return fresh_database(request.getfixturevalue("postgres_url"))


def make_runtime(
    folder: Path,
    database_url: str,
    files: dict[str, str],
    *,
    smtp_port: int | None = None,
) -> Runtime:
    """A project in `folder` (paths → contents under it), a migrated database, a runtime."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
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


@pytest.fixture(scope="session")
def mocks() -> Iterator[Any]:
    """Prism contract mocks of Twilio and HubSpot (tests/integration/provider_mocks.py)."""
    from tests.integration.provider_mocks import provider_mocks

    with provider_mocks() as running:
        yield running
