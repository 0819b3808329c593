"""The migrations form one line: issues built side by side each add a revision, and a fork
(two heads) would make `nurture db upgrade` refuse to run."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

from worker.store.migrate import alembic_config


def test_the_migrations_have_exactly_one_head(tmp_path: Path) -> None:
    scripts = ScriptDirectory.from_config(alembic_config(f"sqlite:///{tmp_path / 'x.db'}"))
    heads = scripts.get_heads()
    assert len(heads) == 1, (
        f"the migrations fork into {len(heads)} heads {sorted(heads)}: give the newer one's "
        "down_revision the other head (or add a merge revision)"
    )


def test_every_revision_is_reached_from_the_head(tmp_path: Path) -> None:
    scripts = ScriptDirectory.from_config(alembic_config(f"sqlite:///{tmp_path / 'x.db'}"))
    reached = {script.revision for script in scripts.walk_revisions()}
    files = {
        path.stem
        for path in (Path(scripts.dir) / "versions").glob("*.py")
        if not path.name.startswith("_")
    }
    assert len(reached) == len(files), f"revisions off the main line: {files} vs {reached}"
