"""`nurture diff [REV]`: before a deploy, what a change of sequence files does — which steps
are added, removed or retimed, and how many enrollments in flight each change would retime,
skip or remove. Nothing is written: the migration runs on worlds that are thrown away.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from worker.definitions.catalog import Catalog, SequenceDef, load_catalog
from worker.engine.core import Engine
from worker.engine.migration import Migration
from worker.kit.clock import utcnow
from worker.kit.errors import NurtureError
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.tables import LeadRow
from worker.store.versions import deployed_versions
from worker.store.worlds import load_world
from worker.support.deploy import leads_in


class DiffError(NurtureError):
    pass


@dataclass
class SequenceChange:
    sequence: str
    state: str  # new | removed | changed
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retimed: list[str] = field(default_factory=list)
    in_flight: int = 0
    effect: Migration = field(default_factory=Migration)


def catalog_at(revision: str, sequences_dir: Path, templates_dir: Path) -> Catalog:
    """The sequence and template files as they were at a git revision."""
    root = Path(_git(sequences_dir, "rev-parse", "--show-toplevel").strip())
    with tempfile.TemporaryDirectory(prefix="nurture-diff-") as folder:
        for source in (sequences_dir, templates_dir):
            relative = source.resolve().relative_to(root)
            listed = _git(root, "ls-tree", "-r", "--name-only", revision, "--", str(relative))
            for name in listed.splitlines():
                target = Path(folder) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(_git_bytes(root, "show", f"{revision}:{name}"))
        old_sequences = Path(folder) / sequences_dir.resolve().relative_to(root)
        old_templates = Path(folder) / templates_dir.resolve().relative_to(root)
        catalog, problems = load_catalog(old_sequences, old_templates)
    if problems:
        raise DiffError(
            f"the files at {revision} do not validate:\n" + "\n".join(map(str, problems))
        )
    return catalog


def diff(runtime: Runtime, revision: str | None) -> list[SequenceChange]:
    new = runtime.catalog
    old_catalog: Catalog | None = None
    if revision is not None:
        old_catalog = catalog_at(
            revision, runtime.config.sequences_dir, runtime.config.templates_dir
        )
        old_versions = {k: v.version for k, v in old_catalog.sequences.items()}
    else:
        old_versions = _deployed(runtime)
    changes = []
    for sequence_id in sorted(set(old_versions) | set(new.sequences)):
        definition = new.sequence(sequence_id)
        if sequence_id not in old_versions:
            changes.append(SequenceChange(sequence_id, "new"))
            continue
        if definition is None:
            change = SequenceChange(sequence_id, "removed")
            change.in_flight = len(leads_in(runtime, sequence_id))
            changes.append(change)
            continue
        if definition.version == old_versions[sequence_id]:
            continue
        change = SequenceChange(sequence_id, "changed")
        old = old_catalog.sequence(sequence_id) if old_catalog else None
        if old is not None:
            _compare_steps(change, old, definition)
        _dry_run(runtime, definition, change)
        changes.append(change)
    return changes


def _compare_steps(change: SequenceChange, old: SequenceDef, new: SequenceDef) -> None:
    before = {s.id: s for s in old.model.steps}
    after = {s.id: s for s in new.model.steps}
    change.added = [s for s in after if s not in before]
    change.removed = [s for s in before if s not in after]
    for step_id in set(before) & set(after):
        a, b = before[step_id], after[step_id]
        if (a.day, a.at, a.after, a.window) != (b.day, b.at, b.after, b.window):
            change.retimed.append(step_id)
    change.retimed.sort()


def _dry_run(runtime: Runtime, definition: SequenceDef, change: SequenceChange) -> None:
    engine = Engine(runtime.catalog, default_timezone=runtime.config.default_timezone)
    now = utcnow()
    total = Migration()
    leads = leads_in(runtime, definition.id)
    change.in_flight = len(leads)
    for lead_id in leads:
        with transaction(runtime.database) as session:
            lead_row = session.get(LeadRow, lead_id)
            if lead_row is None:
                continue
            loaded = load_world(session, lead_row, now)
            for enrollment in loaded.world.active():
                if enrollment.sequence_id == definition.id:
                    _, found = engine.migrate(loaded.world, enrollment, definition, now)
                    total = Migration(
                        total.retimed + found.retimed,
                        total.skipped + found.skipped,
                        total.removed + found.removed,
                        total.added + found.added,
                    )
            session.expunge_all()  # a dry run: the changed worlds are never written
            session.rollback()
    change.effect = total


def _deployed(runtime: Runtime) -> dict[str, str]:
    with transaction(runtime.database) as session:
        return deployed_versions(session)


def _git(folder: Path, *argv: str) -> str:
    return _git_bytes(folder, *argv).decode()


def _git_bytes(folder: Path, *argv: str) -> bytes:
    try:
        found = subprocess.run(
            ["git", "-C", str(folder), *argv], capture_output=True, check=False, timeout=30
        )
    except OSError as exc:
        raise DiffError(f"git is not available: {exc}") from exc
    if found.returncode != 0:
        raise DiffError(f"git {' '.join(argv)}: {found.stderr.decode().strip()}")
    return found.stdout
