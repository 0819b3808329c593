"""What the end-to-end benchmarks share: real servers, an SMTP sink in a process of its own,
Nurture processes that are always stopped, and readings from /proc.

Not a benchmark itself; `bench/send.py` and `bench/claim.py` import it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import free_port  # noqa: E402
from tests.servers.processes import cluster_env  # noqa: E402

PYTHON = sys.executable
NURTURE = [PYTHON, "-m", "worker"]
SOLO_WORKER = [
    PYTHON,
    "-c",
    # `nurture worker` with Celery's solo pool (the CLI always starts prefork): the same
    # app, the same tasks, one process
    "from worker.runtime.process import current; from worker.tasks import app, worker_argv; "
    "current(); app.worker_main(worker_argv(pool='solo'))",
]

err = Console(stderr=True)


def wide_console() -> Console:
    """Wide enough for the result tables, also when the output goes to a file."""
    found = Console()
    if found.width < 120:
        found = Console(width=120)
    return found


# -- running a benchmark ---------------------------------------------------------------------


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(body: Callable[[], int]) -> None:
    """Run `body`; every `with` inside it stops its servers and processes on the way out,
    on success, error, Ctrl-C or SIGTERM alike. Missing server binaries end with a message."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = body()
    except pytest.skip.Exception as exc:
        err.print(f"[red]cannot run the benchmark:[/] {exc.msg}")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: servers and processes were stopped")
        sys.exit(130)
    sys.exit(code)


# -- an SMTP sink in its own process ---------------------------------------------------------

HEADER = re.compile(rb"^X-Nurture-Step-Run:[ \t]*(\S+)", re.MULTILINE | re.IGNORECASE)


@dataclass
class _Received:
    ids: list[str] = field(default_factory=list)
    total_bytes: int = 0
    first: float = 0.0
    last: float = 0.0
    sample: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler:
    """Accepts everything; keeps only the step-run header, the size and the times."""

    def __init__(self, received: _Received) -> None:
        self.received = received

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        end = content.find(b"\r\n\r\n")
        found = HEADER.search(content, 0, end if end >= 0 else len(content))
        now = time.time()
        received = self.received
        with received.lock:
            received.ids.append(found.group(1).decode() if found else "")
            received.total_bytes += len(content)
            received.first = received.first or now
            received.last = now
            if not received.sample:
                received.sample = content
        return "250 OK"


def _sink_main(port: int, commands: Connection) -> None:
    from aiosmtpd.controller import Controller

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the sink
    received = _Received()
    controller = Controller(_Handler(received), hostname="127.0.0.1", port=port)
    controller.start()
    commands.send("ready")
    try:
        while True:
            command = commands.recv()
            with received.lock:
                if command == "stats":
                    commands.send((len(received.ids), received.total_bytes,
                                   received.first, received.last))  # fmt: skip
                elif command == "ids":
                    commands.send(list(received.ids))
                elif command == "sample":
                    commands.send(received.sample)
                elif command == "reset":
                    received.ids.clear()
                    received.total_bytes = 0
                    received.first = received.last = 0.0
                    received.sample = b""
                    commands.send("ok")
                elif command == "cpu":
                    commands.send(sum(os.times()[:2]))
                else:
                    break
    except EOFError:
        pass
    finally:
        controller.stop()


@dataclass(frozen=True)
class SinkStats:
    count: int
    total_bytes: int
    first: float
    last: float


class Sink:
    """aiosmtpd in a separate process, so it has a core to itself as far as the OS allows and
    never shares a GIL with the client it measures."""

    def __init__(self) -> None:
        self.port = free_port()
        context = multiprocessing.get_context("spawn")
        self._commands, child = context.Pipe()
        self._process = context.Process(
            target=_sink_main, args=(self.port, child), name="smtp-sink", daemon=True
        )
        self._lock = threading.Lock()

    def __enter__(self) -> Sink:
        self._process.start()
        if not self._commands.poll(30) or self._commands.recv() != "ready":
            self.close()
            raise RuntimeError("the SMTP sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ask(self, command: str) -> Any:
        with self._lock:
            self._commands.send(command)
            return self._commands.recv()

    def stats(self) -> SinkStats:
        count, total, first, last = self._ask("stats")
        return SinkStats(int(count), int(total), float(first), float(last))

    def ids(self) -> list[str]:
        return list(self._ask("ids"))

    def sample(self) -> bytes:
        return bytes(self._ask("sample"))

    def reset(self) -> None:
        self._ask("reset")

    def cpu_seconds(self) -> float:
        return float(self._ask("cpu"))

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._commands.send("stop")
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)


# -- Nurture processes -----------------------------------------------------------------------


def nurture_env(
    folder: Path, database_url: str, broker_url: str, smtp_port: int, **overrides: str
) -> dict[str, str]:
    """The integration tests' environment, with production rhythms unless overridden."""
    env = cluster_env(folder, database_url, broker_url, smtp_port)
    env.update(
        NURTURE_SECRET_KEY="bench-secret-key-bench-secret-key-bench-secret",
        NURTURE_SWEEP_INTERVAL="15",
        NURTURE_LEASE_SECONDS="60",
        NURTURE_UNKNOWN_AFTER_SECONDS="600",
    )
    env.update(overrides)
    return env


@dataclass
class Processes:
    """Subprocesses, each in a session of its own (so a terminal's Ctrl-C reaches only us),
    logging to `<folder>/<name>.log`; stopped with their whole process group on exit."""

    folder: Path
    env: dict[str, str]
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=self.folder,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def stop(self, name: str, grace: float = 10.0) -> None:
        process = self.running.pop(name, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
        # the group: prefork children that outlived their parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def check(self) -> None:
        """Raise when a process has exited on its own (a crash, a broken import …)."""
        for name, process in self.running.items():
            if process.poll() is not None:
                tail = "\n".join(self.log(name).splitlines()[-25:])
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{tail}")

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, name: str, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log(name):
                return
            process = self.running.get(name)
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log(name)}")
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not log {needle!r} in {timeout:.0f} s:\n{self.log(name)}")


# -- readings from /proc ---------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                pending.extend(int(child) for child in children.split())
    return found


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM … of one process, in KiB (empty when it is gone)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.startswith("Vm") and value.strip().endswith("kB"):
                found[key] = int(value.split()[0])
    return found


def pids_with(needle: str) -> list[int]:
    """Live processes whose command line contains `needle` (a server's own port, say)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                line = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                if needle.encode() in line:
                    found.append(int(entry))
    return found


def tree_rss_kib(pid: int) -> int:
    return sum(memory_kib(p).get("VmRSS", 0) for p in descendants(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in descendants(pid))


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds since boot, summed over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores busy between two `machine_cpu` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def wait_until_idle(console: Console, longest: float, busy_at_most: float = 0.15) -> float:
    """Wait up to `longest` seconds for the machine to be quiet (other people's tests share
    it); returns the share of all cores busy over the last second."""
    deadline = time.monotonic() + longest
    while True:
        before = machine_cpu()
        time.sleep(1.0)
        share = busy_share(before, machine_cpu())
        if share <= busy_at_most or time.monotonic() >= deadline:
            break
        console.print(f"[yellow]the machine is busy ({share:.0%} of all cores): waiting …[/]")
        time.sleep(4.0)
    if share > busy_at_most:
        console.print(f"[yellow]warning: other processes use {share:.0%} of all cores: the "
                      "figures below are low and noisy[/]")  # fmt: skip
    return share
