"""Real Nurture processes for tests: `nurture worker`, `beat` and `run` as subprocesses that a
test can kill -9, with the database, broker and SMTP sink of its choice; and the servers under
them restarted (`restart_postgres`, `RedisServer.restart_empty`).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import create_engine, text


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
        "NURTURE_WORKER_METRICS_PORT": "0",  # several on one machine: tests that scrape pick
        "NURTURE_BEAT_METRICS_PORT": "0",  # a free port with --metrics-port
    }


def restart_postgres(database_url: str) -> None:
    """Restart the PostgreSQL server behind `database_url` (a test's own: every connection to it
    drops), with the options it was started with (`pg_ctl` keeps them in postmaster.opts)."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        data = str(connection.execute(text("SHOW data_directory")).scalar_one())
    engine.dispose()
    pg_ctl = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1])
    argv = [str(pg_ctl), "-D", data, "-w", "-m", "fast", "-l", str(Path(data).parent / "pg.log"),
            "restart"]  # fmt: skip
    if os.geteuid() == 0:  # the cluster runs as `postgres` (tests/servers/databases.py)
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@dataclass
class RedisServer:
    """A Redis of a test's own, which it can restart empty (nothing saved, nothing kept)."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server not found: run scripts/install-test-servers"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _answers(self.port), 10, "redis")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart_empty(self) -> None:
        self.stop()
        self.start()


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port).ping())
    except redis.RedisError:
        return False
