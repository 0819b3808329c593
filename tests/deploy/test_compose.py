"""docker-compose.yml's shape, exercised without Docker (tests/deploy/stack.py): every
service starts from its own command and environment as an unprivileged user on a read-only
checkout, its healthcheck passes, and an event posted to the API comes out as an email at the
SMTP sink (the compose file's Mailpit) with the SMS and CRM backends explicit and working."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.deploy import shape
from tests.deploy.stack import SERVICES, Stack
from tests.servers.processes import wait_for
from tests.servers.smtp import Sink

pytestmark = pytest.mark.integration


def test_every_backend_is_explicit_and_every_written_path_is_a_volume() -> None:
    services = shape.compose()["services"]
    for name in SERVICES:
        env = services[name]["environment"]
        for setting in ("NURTURE_EMAIL_BACKEND", "NURTURE_SMS_BACKEND", "NURTURE_CRM_BACKEND"):
            assert setting in env, f"{name}: {setting} is left to its default"
        assert services[name].get("read_only") is True, f"{name}: root filesystem writable"
        targets = {v["target"] if isinstance(v, dict) else v.split(":")[1]
                   for v in services[name]["volumes"]}  # fmt: skip
        image = shape.image()
        home = env.get("NURTURE_HOME", image.env.get("NURTURE_HOME"))
        outbox = env.get("NURTURE_OUTBOX_DIR", image.env.get("NURTURE_OUTBOX_DIR"))
        assert {home, outbox, "/tmp"} <= targets, f"{name}: {home}, {outbox} or /tmp not a volume"
    assert shape.image().user not in ("", "root", "0")
    for name in ("api", "worker", "beat", "flower"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_the_checkout_is_read_only_for_the_process(compose_stack: Stack) -> None:
    if not compose_stack.unprivileged:
        pytest.skip("runs the services as `nobody` only when the tests run as root (as CI does)")
    tried = compose_stack.run("api", ["sh", "-c", f"touch {compose_stack.app}/written"])
    assert tried.returncode != 0, "the unprivileged user could write the checkout"
    assert "Permission denied" in tried.stderr
    who = compose_stack.run("api", ["id", "-un"])
    assert who.stdout.strip() == "nobody"


@pytest.mark.parametrize("service", ["api", "worker", "beat", "flower"])
def test_the_healthcheck_passes(compose_stack: Stack, service: str) -> None:
    argv = compose_stack.healthcheck(service)
    last: list[str] = []

    def healthy() -> bool:
        process = compose_stack.processes[service]
        assert process.poll() is None, f"{service} exited:\n{compose_stack.log(service)[-3000:]}"
        done = compose_stack.run(service, argv, timeout=60)
        last[:] = [done.stdout[-1500:], done.stderr[-1500:]]
        return done.returncode == 0

    try:
        wait_for(healthy, timeout=120, what=f"{service}'s healthcheck {argv}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nlast output: {last}\nlog:\n{compose_stack.log(service)[-3000:]}"
        ) from None


def test_an_event_comes_out_at_the_sink_with_the_crm_outbox_written(
    compose_stack: Stack, deploy_sink: Sink
) -> None:
    env = compose_stack.environment("api")
    api = f"http://127.0.0.1:{compose_stack.port(8000)}"
    wait_for(compose_stack.ready, timeout=120, what="the API")
    answer = compose_stack.post_event("ana@example.com")
    assert answer["enrolled"], answer

    def arrived() -> bool:
        return any(m["To"] and "ana@example.com" in m["To"] for m in list(deploy_sink.messages))

    wait_for(
        arrived,
        timeout=120,
        what=f"the welcome email\nworker:\n{compose_stack.log('worker')[-3000:]}",
    )
    outbox = compose_stack.volumes["outbox"]
    # the CRM hears of the new contact and the email: written to the outbox volume (the same
    # backend and folder as texts), pushed by the worker without an error
    changes = outbox / "crm" / "changes.jsonl"

    def pushed() -> bool:
        return changes.exists() and "ana@example.com" in changes.read_text()

    wait_for(pushed, timeout=120, what=f"the CRM change in {changes}")
    assert "CRM push" not in compose_stack.log("worker"), compose_stack.log("worker")[-3000:]
    lead = httpx.get(
        f"{api}/v1/leads/{answer['lead_id']}",
        headers={"Authorization": f"Bearer {env['NURTURE_API_TOKENS']}"},
        timeout=30,
    ).json()
    statuses = json.dumps(lead)
    assert '"failed"' not in statuses, lead
    assert '"unknown"' not in statuses, lead
