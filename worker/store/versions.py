"""Which version of each sequence is deployed (content hash and git commit)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from worker.definitions.catalog import Catalog
from worker.store.tables import SequenceVersionRow


def deployed_versions(session: Session) -> dict[str, str]:
    rows = session.execute(select(SequenceVersionRow)).scalars()
    return {r.sequence_id: r.version for r in rows if r.present}


def record_versions(
    session: Session, catalog: Catalog, commit: str | None, now: datetime
) -> tuple[list[str], list[str]]:
    """Store the loaded versions; returns (changed sequence ids, removed sequence ids)."""
    known = {r.sequence_id: r for r in session.execute(select(SequenceVersionRow)).scalars()}
    changed = []
    for sequence_id, definition in catalog.sequences.items():
        row = known.get(sequence_id) or SequenceVersionRow(
            sequence_id=sequence_id, version=definition.version, loaded_at=now
        )
        if row.version != definition.version:
            changed.append(sequence_id)
        row.version, row.git_commit, row.loaded_at, row.present = (
            definition.version,
            commit,
            now,
            True,
        )
        session.add(row)
    removed = [s for s, r in known.items() if s not in catalog.sequences and r.present]
    for sequence_id in removed:
        known[sequence_id].present = False
        session.add(known[sequence_id])
    return changed, removed
