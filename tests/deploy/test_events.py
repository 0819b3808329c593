"""Task events for Flower: off by default, on with NURTURE_WORKER_EVENTS or `nurture worker
--events` (the compose file's Flower test sees them arrive: test_flower.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.cli.main import app
from worker.config import Settings, settings
from worker.tasks import make_app


def test_task_events_follow_the_setting(tmp_path: Path) -> None:
    quiet = make_app(Settings(home=tmp_path))
    assert quiet.conf.worker_send_task_events is False
    assert quiet.conf.task_send_sent_event is False
    told = make_app(Settings(home=tmp_path, worker_events=True))
    assert told.conf.worker_send_task_events is True
    assert told.conf.task_send_sent_event is True


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [([], None, False), (["--events"], None, True), ([], "true", True)],
)
def test_nurture_worker_turns_events_on_from_the_option_or_the_setting(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    env: str | None,
    expected: bool,
) -> None:
    started: list[bool] = []
    monkeypatch.setattr(
        "worker.processes.run_worker",
        lambda concurrency, metrics_port, events: started.append(events),
    )
    root = Path(__file__).resolve().parents[2]  # the sample sequences, checked at start
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(root / "sequences"))
    monkeypatch.setenv("NURTURE_TEMPLATES_DIR", str(root / "templates"))
    if env is not None:
        monkeypatch.setenv("NURTURE_WORKER_EVENTS", env)
    settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["worker", *argv])
    finally:
        settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert started == [expected]
