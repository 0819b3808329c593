"""What a running process holds: settings, the database, the loaded sequences and the engine,
and the providers chosen by name. One per process, built on first use.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine as Database

from integrations.ports import Crm, EmailSender, TextSender
from worker.config import Settings, settings
from worker.definitions.catalog import Catalog, load_catalog, sequence_files
from worker.engine.core import Engine
from worker.kit.errors import NurtureError
from worker.kit.problems import Problem
from worker.runtime.providers import providers
from worker.runtime.ratelimit import Limiter, account, limiter_for, rate_of
from worker.store.db import database_url, engine_for


class CatalogError(NurtureError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def files_fingerprint(config: Settings) -> str:
    """Changes whenever a sequence or template file changes: cheap enough to poll."""
    digest = hashlib.sha256()
    paths = sequence_files(config.sequences_dir)
    if config.templates_dir.is_dir():
        paths += sorted(p for p in config.templates_dir.rglob("*") if p.is_file())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()


def git_commit(folder: Path) -> str | None:
    try:
        found = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None if found.returncode == 0 else None


@dataclass
class Runtime:
    config: Settings
    database: Database
    catalog: Catalog
    engine: Engine
    email: EmailSender
    text: TextSender
    crm: Crm
    commit: str | None = None
    fingerprint: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    looked_at: dict[str, float] = field(default_factory=dict)
    limiter: Limiter | None = None
    """Rate limits per provider account (worker/runtime/ratelimit.py), made on first use."""
    look_every: float = 2.0
    """Seconds between looks at the files (and at the deployed versions): a task must not
    stat every template, nor a tick query the versions, each time."""

    def due_to_look(self, what: str) -> bool:
        """At most one look at `what` per `look_every` seconds in this process."""
        now = time.monotonic()
        if now - self.looked_at.get(what, float("-inf")) < self.look_every:
            return False
        self.looked_at[what] = now
        return True

    def rate_limited(self, channel: str) -> bool:
        """Whether the policy limits the rate of `channel`'s provider account."""
        return rate_of(self.catalog.policy.rate_limits, channel) is not None

    def throttle(self, channel: str) -> float:
        """Wait for a slot before handing a `channel` message to its provider: the seconds
        waited. Raises RateLimited when the account is booked beyond the longest wait."""
        rate = rate_of(self.catalog.policy.rate_limits, channel)
        if rate is None:
            return 0.0
        if self.limiter is None:
            with self.lock:  # one limiter per runtime, however many threads ask first
                if self.limiter is None:
                    self.limiter = limiter_for(self.config)
        return self.limiter.acquire(account(self.config, channel), rate)

    def reload(self) -> Catalog:
        """All or nothing: a broken commit changes nothing (raises CatalogError)."""
        with self.lock:
            fingerprint = files_fingerprint(self.config)
            catalog = load(self.config)
            self.catalog = catalog
            self.engine = Engine(catalog, default_timezone=self.config.default_timezone)
            self.commit = git_commit(self.config.sequences_dir)
            self.fingerprint = fingerprint
            return catalog

    def reload_if_changed(self) -> bool:
        if not self.due_to_look("files"):
            return False
        if files_fingerprint(self.config) == self.fingerprint:
            return False
        try:
            self.reload()
        except CatalogError:
            self.fingerprint = files_fingerprint(self.config)  # report once, keep the old one
            raise
        return True


def load(config: Settings) -> Catalog:
    catalog, problems = load_catalog(config.sequences_dir, config.templates_dir)
    if problems:
        raise CatalogError(problems)
    return catalog


def build(config: Settings | None = None) -> Runtime:
    config = config or settings()
    catalog = load(config)
    email, text, crm = providers(config)
    return Runtime(
        config=config,
        database=engine_for(database_url(config)),
        catalog=catalog,
        engine=Engine(catalog, default_timezone=config.default_timezone),
        email=email,
        text=text,
        crm=crm,
        commit=git_commit(config.sequences_dir),
        fingerprint=files_fingerprint(config),
    )


@lru_cache(maxsize=1)
def current() -> Runtime:
    return build()
