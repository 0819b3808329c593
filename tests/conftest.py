"""The fixtures every test folder shares. The servers start only for a test that asks for them
(the session-scoped ones once, on first use), so the tests not marked `integration` need none.
Plain helpers are in tests/helpers.py, shared sequences and templates in tests/library.py."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.helpers import CatalogFactory, free_port, fresh_database
from tests.library import EMAIL
from tests.servers.smtp import Sink
from worker.definitions.catalog import Catalog, load_catalog

# -- servers ------------------------------------------------------------------------------------


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
    from tests.servers.databases import postgres

    with postgres() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.servers.databases import redis

    with redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nurture.db'}"
    return fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def mocks() -> Iterator[Any]:
    """Prism contract mocks of Twilio and HubSpot (tests/servers/provider_mocks.py)."""
    from tests.servers.provider_mocks import provider_mocks

    with provider_mocks() as running:
        yield running


# -- catalogs for the engine --------------------------------------------------------------------


@pytest.fixture
def make_catalog(tmp_path: Path) -> CatalogFactory:
    """Write sequence files (name → YAML) and a template for every name they use."""

    def build(files: dict[str, str], templates: dict[str, str] | None = None) -> Catalog:
        sequences = tmp_path / "sequences"
        sequences.mkdir(exist_ok=True)
        for name, text in files.items():
            (sequences / f"{name}.yaml").write_text(textwrap.dedent(text))
        for name, body in (templates or {}).items():
            path = tmp_path / "templates" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        for name in ("a", "b", "c", "d"):
            path = tmp_path / "templates" / "t" / f"{name}.html.j2"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(EMAIL)
            (tmp_path / "templates" / "t" / f"{name}.sms.j2").write_text("Hi {{ step.id }}")
        catalog, problems = load_catalog(sequences, tmp_path / "templates")
        assert not problems, "\n".join(map(str, problems))
        return catalog

    return build
