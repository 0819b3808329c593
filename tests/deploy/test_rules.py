"""The Prometheus files under deploy/ as promtool reads them: the config and the rules are
valid, and the alerts' unit tests pass (each alert fires on synthetic series and stays quiet
otherwise: deploy/prometheus/alerts.test.yml)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy import shape


def promtool(*argv: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not found: run scripts/install-test-servers (Debian's prometheus)")
    return subprocess.run([binary, *argv], capture_output=True, text=True, timeout=120,
                          cwd=shape.PROMETHEUS)  # fmt: skip


def test_the_config_is_valid() -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(shape.rule_expressions())} rules found" in checked.stdout


def test_each_alert_fires_on_its_series_and_stays_quiet_otherwise() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = shape.load_yaml(shape.PROMETHEUS / "alerts.test.yml")["tests"]
    alerts = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    assert alerts == set(shape.rule_expressions()), "an alert without a unit test"
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {
        t["alertname"] for case in cases for t in case["alert_rule_test"] if not t["exp_alerts"]
    }
    assert fired == quiet == alerts, (
        "each alert needs a case where it fires and one where it does not"
    )


def test_the_dashboard_names_only_contract_metrics() -> None:
    """The dashboard and the rules use the names of the metrics contract, nothing else."""
    names = set(shape.referenced_names())
    assert names, "no metric found in the rules or the dashboard"
    assert all(name.startswith("nurture_") for name in names)
