"""Real PostgreSQL and Redis for tests, started on loopback in a temporary folder.

Skips with the reason when the binaries are missing (`scripts/install-test-servers` installs
them; CI always does). `initdb` refuses to run as root, so as root the cluster runs as the
`postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres() -> Iterator[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL binaries not found: run scripts/install-test-servers")
    bin_dir = Path(found[-1]).parent
    # not under pytest's folders: they are root-only, and the cluster runs as `postgres`
    folder = Path(tempfile.mkdtemp(prefix="nurture-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(sockets, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                      "--auth=trust", "-E", "UTF8"]),
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c fsync=off -k {sockets}"
    options += " -c max_connections=200 -c synchronous_commit=off"
    subprocess.run(
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-o", options,
                      "-l", str(folder / "pg.log"), "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        subprocess.run(
            _as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                          "-U", "postgres", "nurture"]),
            check=True, capture_output=True,
        )  # fmt: skip
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/nurture"
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def redis(folder: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not found: run scripts/install-test-servers")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import redis as client

            client.Redis(port=port).ping()
            break
        except Exception:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
