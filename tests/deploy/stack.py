"""docker-compose.yml's services run natively, the way their containers would: each service's
`command` with the image's ENV and the service's `environment`, from a copy of the checkout
laid out as the image's WORKDIR that the process cannot write, as an unprivileged user (when
the tests run as root, as CI does), with the service's volumes as its only writable folders.

Container names are replaced by loopback servers (postgres, redis, mailpit) and container
paths and ports by folders and free ports of the test's own (`Stack.translate`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from tests.deploy import shape
from tests.helpers import free_port

UNPRIVILEGED = "nobody"
SERVICES = ("migrate", "api", "worker", "beat", "flower")
PORTS = (8000, 9101, 9102, 5555)
"""The ports the containers listen on (api, worker and beat metrics, flower)."""


@dataclass(frozen=True)
class Servers:
    database_url: str
    """A fresh database on the test server, reachable as the compose file's user."""
    redis_port: int
    smtp_port: int


@dataclass
class Stack:
    folder: Path
    servers: Servers
    services: dict[str, Any] = field(default_factory=lambda: shape.compose()["services"])
    image: shape.Image = field(default_factory=shape.image)
    ports: dict[int, int] = field(default_factory=lambda: {p: free_port() for p in PORTS})
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)
    """Named volumes (shared by the services that mount them)."""
    mounts: dict[str, dict[str, Path]] = field(default_factory=dict)
    """Per service: container path → the folder standing for it."""

    @property
    def app(self) -> Path:
        return self.folder / "app"

    @property
    def unprivileged(self) -> bool:
        return os.geteuid() == 0

    def port(self, container_port: int) -> int:
        return self.ports[container_port]

    # -- the image: the read-only checkout -------------------------------------------------

    def build(self) -> None:
        """The image's WORKDIR as the Dockerfile's COPY lines fill it, owned by root, which
        the unprivileged user can read and not write."""
        self.folder.chmod(0o755)
        self.app.mkdir()
        for source, target in self.image.copies:
            destination, path = self.app / target, shape.ROOT / source
            if path.is_dir():
                shutil.copytree(path, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, destination / path.name)
        for path in [self.app, *self.app.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)

    # -- a service: its mounts, environment and command ------------------------------------

    def _writable(self, name: str) -> Path:
        path = self.folder / "volumes" / name
        path.mkdir(parents=True)
        if self.unprivileged:
            user = pwd.getpwnam(UNPRIVILEGED)
            os.chown(path, user.pw_uid, user.pw_gid)
        return path

    def mount(self, service: str) -> dict[str, Path]:
        if service in self.mounts:
            return self.mounts[service]
        found = {self.image.workdir: self.app}
        for volume in self.services[service].get("volumes", []):
            if isinstance(volume, dict):  # the long syntax: tmpfs, one per container
                assert volume["type"] == "tmpfs", volume
                target = volume["target"]
                found[target] = self._writable(f"{service}{target.replace('/', '-')}")
                continue
            source, target, *mode = volume.split(":")
            if source.startswith("./"):  # a bind mount of the checkout: the copy's folder
                assert mode == ["ro"], f"{service} mounts {source} writable"
                found[target] = self.app / source.removeprefix("./")
            else:
                if source not in self.volumes:
                    self.volumes[source] = self._writable(source)
                found[target] = self.volumes[source]
        self.mounts[service] = found
        return found

    def translate(self, service: str, value: str) -> str:
        """A container path, host name or port in `value` → the test's own."""
        for target, path in sorted(self.mount(service).items(), key=lambda i: -len(i[0])):
            if value == target or value.startswith(target + "/"):
                return str(path) + value[len(target) :]
        for container, port in self.ports.items():
            value = value.replace(f":{container}/", f":{port}/").replace(
                f"={container}", f"={port}"
            )
            if value == str(container):
                value = str(port)
        return "127.0.0.1" if value == "0.0.0.0" else value

    def environment(self, service: str) -> dict[str, str]:
        declared = {**self.image.env, **self.services[service].get("environment", {})}
        env = {key: self.translate(service, str(value)) for key, value in declared.items()}
        database = make_url(env["NURTURE_DATABASE_URL"])
        assert (database.host, database.port) == ("postgres", 5432), database
        test_server = make_url(self.servers.database_url)
        env["NURTURE_DATABASE_URL"] = database.set(
            host=test_server.host, port=test_server.port, database=test_server.database
        ).render_as_string(hide_password=False)
        assert env["NURTURE_BROKER_URL"] == "redis://redis:6379/0", env["NURTURE_BROKER_URL"]
        env["NURTURE_BROKER_URL"] = f"redis://127.0.0.1:{self.servers.redis_port}/0"
        if env.get("NURTURE_EMAIL_BACKEND") == "smtp":
            assert (env["NURTURE_SMTP_HOST"], env["NURTURE_SMTP_PORT"]) == ("mailpit", "1025")
            env["NURTURE_SMTP_HOST"] = "127.0.0.1"
            env["NURTURE_SMTP_PORT"] = str(self.servers.smtp_port)
        home = self.mount(service)
        return {
            **env,
            # what the container has: the image's python and `nurture` on PATH, the code in
            # WORKDIR, a HOME and a /tmp of its own, a host name
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "PYTHONPATH": str(self.app),
            "HOME": str(home.get("/var/lib/nurture", self.app)),
            "TMPDIR": str(home.get("/tmp", self.app)),
            "HOSTNAME": socket.gethostname(),
            "LANG": "C.UTF-8",
        }

    def as_container(self, argv: list[str]) -> list[str]:
        if not self.unprivileged:
            return argv
        drop = ["setpriv", f"--reuid={UNPRIVILEGED}", "--regid=nogroup", "--clear-groups", "--"]
        hidden = _hidden_above(Path(os.path.realpath(sys.base_prefix)))
        if hidden is None:
            return [*drop, *argv]
        # the image has its Python where anyone may run it; here it may sit in root's home
        # (pyenv): a mount namespace of the command's own shows only the interpreter there
        prefix, keep = os.path.realpath(sys.base_prefix), self.folder / "interpreter"
        keep.mkdir(exist_ok=True)
        script = (
            f"mount --bind {prefix} {keep} && mount -t tmpfs -o mode=755 tmpfs {hidden} && "
            f'mkdir -p {prefix} && mount --bind {keep} {prefix} && exec "$@"'
        )
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                *drop, *argv]  # fmt: skip

    def command(self, service: str) -> list[str]:
        return [self.translate(service, str(word)) for word in self.services[service]["command"]]

    def healthcheck(self, service: str) -> list[str]:
        test = [
            str(word).replace("$$", "$") for word in self.services[service]["healthcheck"]["test"]
        ]
        kind, *rest = test
        if kind == "CMD-SHELL":
            return ["sh", "-c", self.translate(service, rest[0])]
        assert kind == "CMD", test
        return [self.translate(service, word) for word in rest]

    def run(
        self, service: str, argv: list[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """One command in `service`'s container, to its end (docker compose exec)."""
        return subprocess.run(
            self.as_container(argv), cwd=self.app, env=self.environment(service),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def start(self, service: str) -> None:
        log = (self.folder / f"{service}.log").open("ab")
        self.processes[service] = subprocess.Popen(
            self.as_container(self.command(service)), cwd=self.app,
            env=self.environment(service), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def post_event(self, email: str) -> dict[str, Any]:
        """A `signed_up` event as a signup form posts it (the sample welcome sequence sends its
        first email at once); the API's answer."""
        answer = httpx.post(
            f"http://127.0.0.1:{self.port(8000)}/v1/events",
            headers={"Authorization": f"Bearer {self.environment('api')['NURTURE_API_TOKENS']}"},
            json={"type": "signed_up", "lead": {"email": email, "first_name": "Ana"}},
            timeout=30,
        )
        assert answer.status_code in (200, 202), answer.text
        found: dict[str, Any] = answer.json()
        return found

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port(8000)}/readyz"
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self, service: str) -> str:
        path = self.folder / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _hidden_above(path: Path) -> Path | None:
    """The first folder above `path` that other users cannot enter (like /root), if any."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


@contextmanager
def stack(servers: Servers) -> Iterator[Stack]:
    """The compose services built and started (migrate run to its end first)."""
    folder = Path(tempfile.mkdtemp(prefix="nurture-compose-"))
    running = Stack(folder, servers)
    try:
        running.build()
        migrated = running.run("migrate", running.command("migrate"), timeout=120)
        assert migrated.returncode == 0, f"migrate failed:\n{migrated.stdout}{migrated.stderr}"
        for service in SERVICES[1:]:
            running.start(service)
        yield running
    finally:
        running.stop()
        shutil.rmtree(folder, ignore_errors=True)
