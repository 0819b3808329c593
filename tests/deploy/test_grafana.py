"""The Grafana files under deploy/grafana: the provisioned data source is the one every panel
queries, the dashboards folder is where compose mounts it, and the dashboard covers what the
operators need (docs/deploy.md)."""

from __future__ import annotations

import json

from tests.deploy import shape

GRAFANA = shape.ROOT / "deploy" / "grafana"


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    source = shape.load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = source["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in shape.compose()["services"]
    dashboard = json.loads(shape.DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        assert all(t["datasource"]["uid"] == datasource["uid"] for t in panel["targets"])


def test_the_dashboards_folder_is_the_one_compose_mounts() -> None:
    provider = shape.load_yaml(GRAFANA / "provisioning" / "dashboards" / "nurture.yml")
    (dashboards,) = provider["providers"]
    mounts = dict(v.split(":")[:2] for v in shape.compose()["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == dashboards["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    names = {
        name.removesuffix("_bucket")
        for expr in shape.dashboard_expressions()
        for name in shape.NAME.findall(expr)
    }
    wanted = {
        "nurture_events_ingested_total", "nurture_sends_total", "nurture_steps_due",
        "nurture_oldest_due_step_age_seconds", "nurture_send_duration_seconds",
        "nurture_provider_request_duration_seconds", "nurture_steps_skipped_total",
        "nurture_steps_held", "nurture_crm_backlog", "nurture_crm_sync_lag_seconds",
        "nurture_heartbeat_timestamp_seconds", "nurture_steps_unknown",
    }  # fmt: skip
    assert wanted <= names, wanted - names
    quantiles = [e for e in shape.dashboard_expressions() if "histogram_quantile" in e]
    assert any("nurture_send_duration_seconds_bucket" in e for e in quantiles)
    assert any("nurture_provider_request_duration_seconds_bucket" in e for e in quantiles)
