"""Fixtures of the console's browser tests: `console`, a real `nurture run` with an SMTP sink,
and `browser`, Debian's Chromium under Playwright. Screenshots go to NURTURE_SCREENSHOTS when it
is set (docs/screenshots when refreshing the README's pictures), else to the test's folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FILES,
    TOKEN,
    Console,
    chromium_missing,
    started,
)
from tests.helpers import free_port, write_project
from tests.servers.processes import Cluster, cluster_env, wait_for
from tests.servers.smtp import Sink


@pytest.fixture
def console(tmp_path: Path, smtp_sink: Sink) -> Iterator[Console]:
    write_project(tmp_path, FILES)
    database_url = f"sqlite:///{tmp_path / '.nurture' / 'nurture.db'}"
    env = {
        **cluster_env(tmp_path, database_url, "filesystem://", smtp_sink.port),
        "NURTURE_API_TOKENS": TOKEN,
        "NURTURE_DEFAULT_TIMEZONE": "Europe/Berlin",
    }
    cluster = Cluster(tmp_path, env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env["NURTURE_PUBLIC_URL"] = base
    cluster.env = env
    try:
        cluster.start("run", "run", "--port", str(port))
        wait_for(lambda: started(cluster, base), 60, "nurture run to answer /readyz")
        wait_for(lambda: "ready" in cluster.log("run"), 60, "the worker")
        yield Console(cluster, base, env, tmp_path)
    finally:
        cluster.stop_all()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) per test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB",
                                   timezone_id="Europe/London")  # fmt: skip
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    import os

    folder = Path(os.environ.get("NURTURE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
