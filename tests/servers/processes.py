"""Real Nurture processes for tests: `nurture worker`, `beat` and `run` as subprocesses that a
test can kill -9, with the database, broker and SMTP sink of its choice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Cluster:
    folder: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *argv: str, **overrides: str) -> None:
        env = {**os.environ, **self.env, **overrides}
        log = (self.folder / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "worker", *argv],
            cwd=self.folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """kill -9: no cleanup, no acknowledgement, messages held in memory are gone."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def cluster_env(folder: Path, database_url: str, broker_url: str, smtp_port: int) -> dict[str, str]:
    return {
        "NURTURE_HOME": str(folder / ".nurture"),
        "NURTURE_DATABASE_URL": database_url,
        "NURTURE_BROKER_URL": broker_url,
        "NURTURE_SEQUENCES_DIR": str(folder / "sequences"),
        "NURTURE_TEMPLATES_DIR": str(folder / "templates"),
        "NURTURE_OUTBOX_DIR": str(folder / "outbox"),
        "NURTURE_EMAIL_BACKEND": "smtp",
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(smtp_port),
        "NURTURE_DISPATCH_INTERVAL": "0.2",
        "NURTURE_SWEEP_INTERVAL": "0.5",
        "NURTURE_LEASE_SECONDS": "3",
        "NURTURE_UNKNOWN_AFTER_SECONDS": "3",
    }
