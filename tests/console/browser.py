"""A real `nurture run` (API, worker and beat in one, SQLite and the filesystem broker) with an
SMTP sink, people added with `nurture users add`, and Debian's Chromium driven by Playwright:
what the browser tests in this folder share (their fixtures are in conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers.processes import Cluster, wait_for

CHROMIUM = os.environ.get("NURTURE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TOKEN = "console-browser-token"
PASSWORD = "correct horse battery"

# welcome: an email at once and one 15 s later (the pause test stops the second one);
# offer: two emails at once on a pricing visit, of which a 2-a-day cap holds one for a lead that
# has had the welcome already (the lead page then says why it waits).
FILES = {
    "sequences/welcome.yaml": """
        name: Welcome
        enroll: {on: signed_up}
        steps:
          - {id: hello, at: 0s, email: t/hello}
          - {id: tips, at: 15s, email: t/tips}
        """,
    "sequences/offer.yaml": """
        name: Offer
        enroll: {on: pricing_page_viewed}
        steps:
          - {id: pricing, at: 0s, email: t/pricing}
          - {id: compare, at: 0s, email: t/pricing}
        """,
    "sequences/policy.yaml": "kind: policy\ncaps: {email: {per: 1d, max: 2}}\n",
    "templates/t/hello.html.j2": '---\nsubject: "Hello {{ lead.first_name }}"\n---\n<p>Hi</p>\n',
    "templates/t/tips.html.j2": '---\nsubject: "Tips"\n---\n<p>Tips</p>\n',
    "templates/t/pricing.html.j2": '---\nsubject: "Our prices"\n---\n<p>Prices</p>\n',
}


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set NURTURE_CHROMIUM)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    return None


@dataclass
class Console:
    """A running `nurture run` and what a test needs to drive it."""

    cluster: Cluster
    base: str
    env: dict[str, str]
    folder: Path

    @property
    def url(self) -> str:
        return self.base + "/console"

    def nurture(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """A `nurture` command against the same home and database."""
        return subprocess.run(
            [sys.executable, "-m", "worker", *argv],
            cwd=self.folder,
            env={**os.environ, **self.env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def add_user(self, name: str, role: str) -> None:
        done = self.nurture("users", "add", name, "--role", role, stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stdout + done.stderr

    def event(self, kind: str, email: str, first_name: str = "Ana") -> str:
        """Post an event as a website would; the lead's id."""
        lead = {"email": email, "first_name": first_name, "timezone": "Europe/Berlin"}
        answer = httpx.post(
            self.base + "/v1/events",
            json={"type": kind, "lead": lead},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert answer.status_code in (200, 201, 202), answer.text
        return str(answer.json()["lead_id"])


def started(cluster: Cluster, base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def arrivals(messages: Callable[[], list[Any]], count: int, timeout: float) -> float:
    """Wait until `count` messages have arrived; the monotonic time the last one was seen."""
    wait_for(lambda: len(messages()) >= count, timeout, f"{count} messages at the sink")
    return time.monotonic()
