"""The compose stack run natively (tests/deploy/stack.py), once for the folder's tests: on
PostgreSQL, Redis and an SMTP sink of its own on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from aiosmtpd.controller import Controller

from tests.deploy.stack import Servers, Stack, stack
from tests.helpers import free_port, fresh_database
from tests.servers.smtp import Sink


@pytest.fixture(scope="session")
def deploy_sink() -> Iterator[Sink]:
    sink = Sink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def compose_stack(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory, deploy_sink: Sink
) -> Iterator[Stack]:
    from tests.servers.databases import redis

    database = fresh_database(postgres_url)
    admin = sqlalchemy.create_engine(database, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:  # the compose file's user and password
        connection.execute(sqlalchemy.text(
            "DO $$ BEGIN CREATE ROLE nurture LOGIN PASSWORD 'nurture'; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ))  # fmt: skip
        connection.execute(sqlalchemy.text("GRANT ALL ON SCHEMA public TO nurture"))
        name = database.rsplit("/", 1)[1]
        connection.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" OWNER TO nurture'))
    admin.dispose()
    with redis(Path(tmp_path_factory.mktemp("deploy-redis"))) as broker:
        port = int(broker.rsplit(":", 1)[1].split("/")[0])
        with stack(Servers(database, port, deploy_sink.port)) as running:
            yield running
