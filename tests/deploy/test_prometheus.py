"""Debian's Prometheus against the compose stack run natively (tests/deploy/stack.py): the
scrape jobs of deploy/prometheus/prometheus.yml pointed at loopback, the alert rules loaded;
every target is scraped and every rule evaluates. And every metric name the rules and the
Grafana dashboard use is served by the stack."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from tests.deploy import shape
from tests.deploy.stack import Stack
from tests.helpers import free_port
from tests.servers.processes import wait_for
from tests.servers.smtp import Sink

pytestmark = pytest.mark.integration


def loopback_config(stack: Stack) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each job's targets replaced by the stack's
    loopback ports, scraping and evaluating every second."""
    config: dict[str, Any] = shape.load_yaml(shape.PROMETHEUS / "prometheus.yml")
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(shape.PROMETHEUS / name) for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        ports = [
            int(t.rsplit(":", 1)[1]) for c in job.pop("static_configs", []) for t in c["targets"]
        ]
        ports += [int(c["port"]) for c in job.pop("dns_sd_configs", [])]
        assert ports, f"job {job['job_name']} has no targets"
        job["static_configs"] = [{"targets": [f"127.0.0.1:{stack.port(p)}" for p in ports]}]
    return config


@pytest.fixture(scope="module")
def prometheus(compose_stack: Stack) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not found: run scripts/install-test-servers (Debian's prometheus)")
    folder = Path(tempfile.mkdtemp(prefix="nurture-prometheus-"))
    config = folder / "prometheus.yml"
    YAML().dump(loopback_config(compose_stack), config)
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/-/ready"), timeout=60, what="prometheus ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def test_every_target_is_scraped_and_every_rule_evaluates(prometheus: str) -> None:
    targets: list[dict[str, Any]] = []

    def all_up() -> bool:
        targets[:] = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"][
            "activeTargets"
        ]
        return bool(targets) and all(t["health"] == "up" for t in targets)

    try:
        wait_for(all_up, timeout=90, what="every target up")
    except AssertionError:
        down = {t["labels"]["job"]: t["lastError"] for t in targets if t["health"] != "up"}
        raise AssertionError(f"targets not up: {down}") from None
    assert {t["labels"]["job"] for t in targets} == {
        "nurture-api",
        "nurture-worker",
        "nurture-beat",
    }
    rules: list[dict[str, Any]] = []

    def evaluated() -> bool:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules[:] = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(r["health"] == "ok" and r["evaluationTime"] > 0 for r in rules)

    try:
        wait_for(evaluated, timeout=60, what="every rule evaluated")
    except AssertionError:
        bad = {r["name"]: (r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"}
        raise AssertionError(f"rules not evaluated ok: {bad or rules}") from None
    assert {r["name"] for r in rules} == set(shape.rule_expressions())


def test_every_metric_the_rules_and_the_dashboard_name_is_served(
    compose_stack: Stack, deploy_sink: Sink
) -> None:
    # things happen first: an event comes in, an email goes out, the CRM hears of it
    wait_for(compose_stack.ready, timeout=120, what="the API")
    compose_stack.post_event("metrics@example.com")
    wait_for(
        lambda: any("metrics@example.com" in str(m["To"]) for m in list(deploy_sink.messages)),
        timeout=120, what="the email at the sink",
    )  # fmt: skip
    served: set[str] = set()
    unreachable = []
    for job, port in {"api": 8000, "worker": 9101, "beat": 9102}.items():
        path = "/metrics"
        try:
            page = httpx.get(f"http://127.0.0.1:{compose_stack.port(port)}{path}", timeout=10)
            page.raise_for_status()
            served |= shape.scraped_names(page.text)
        except httpx.HTTPError as exc:
            unreachable.append(f"{job} ({exc})")
    missing = {name: sorted(where) for name, where in shape.referenced_names().items()
               if name not in served}  # fmt: skip
    assert not missing, (
        "named by the rules or the dashboard, served by no process: "
        + "; ".join(f"{name} ({', '.join(where)})" for name, where in sorted(missing.items()))
        + (f"; unreachable: {', '.join(unreachable)}" if unreachable else "")
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
