"""Every request the HubSpot client can make, against Prism serving HubSpot's own OpenAPI
documents: a request that breaks HubSpot's schema gets a 422 (and a `✖` in the mock's log)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from integrations.hubspot import HubSpotCrm
from integrations.ports import CrmTaskRequest, PermanentError, PushResult
from worker.crm.properties import PROPERTIES, hubspot_setup

pytestmark = pytest.mark.integration
T = TypeVar("T")

STATE = {p.name: "" for p in PROPERTIES} | {
    "nurture_sequences": "trial",
    "nurture_status": "active",
    "nurture_score": "12",
    "nurture_segment": "warm",
    "nurture_unsubscribed": "false",
    "nurture_last_message_at": "1795341600000",
}


def change(lead_id: str, email: str | None, kind: str, change_id: int) -> dict[str, Any]:
    return {
        "id": change_id,
        "type": kind,
        "delivery": f"crm-{change_id}-{change_id}",
        "at": datetime(2026, 11, 22, 10, 0, tzinfo=UTC).isoformat(),
        "lead": {"id": lead_id, "email": email, "phone": None, "external_id": None},
        "data": {"sequence": "trial", "step": "welcome", "channel": "email", "subject": "Hi"},
        "contact": STATE,
    }


def checked(mocks: Any, action: Callable[[], T]) -> tuple[T, list[str]]:
    """Run `action`; return its result and the log of each request it made, one per block."""
    before = len(mocks.log("hubspot"))
    result = action()
    logged = mocks.log("hubspot")[before:]
    return result, re.split(r"(?=\[HTTP SERVER\])", logged)[1:]


def request_line(block: str) -> str:
    found = re.search(r"\[HTTP SERVER\] (\w+) (\S+)", block)
    assert found, block
    return f"{found[1].upper()} {found[2].split('?')[0]}"


def assert_contract_kept(blocks: list[str]) -> None:
    """Each request passed HubSpot's request rules. Prism also flags its own example answers
    where they break HubSpot's response schema (`Violation: response.…`): not our requests."""
    for block in blocks:
        assert "The request passed the validation rules" in block, block
        ours = [
            line
            for line in block.splitlines()
            if "✖" in line and "Violation: response." not in line
        ]
        assert ours == [], block


def test_contacts_are_upserted_by_email_in_one_batch(mocks: Any) -> None:
    hubspot = HubSpotCrm("pat-na1-test-token", mocks.hubspot_url)
    many = [change(f"lead{i}", f"P{i}@example.com", "score_changed", i) for i in range(3)]
    result, blocks = checked(mocks, lambda: hubspot.push(many))
    assert result == PushResult()
    assert_contract_kept(blocks)
    assert [request_line(b) for b in blocks] == ["POST /crm/v3/objects/contacts/batch/upsert"]


def test_a_sent_message_becomes_a_note_on_the_contact(mocks: Any) -> None:
    hubspot = HubSpotCrm("pat-na1-test-token", mocks.hubspot_url, notes=True)
    sent = [change("lead9", "ana@example.com", "step_sent", 9)]
    result, blocks = checked(mocks, lambda: hubspot.push(sent))
    assert result == PushResult()
    assert_contract_kept(blocks)
    assert [request_line(b) for b in blocks] == [
        "POST /crm/v3/objects/contacts/batch/upsert",
        "POST /crm/v3/objects/notes/batch/create",
    ]


def test_a_crm_task_is_a_task_associated_to_the_contact(mocks: Any) -> None:
    hubspot = HubSpotCrm("pat-na1-test-token", mocks.hubspot_url)
    task = CrmTaskRequest(
        email="ana@example.com",
        subject="Call Ana",
        body="She viewed pricing twice.",
        priority="high",
        task_type="call",
        due_after_seconds=3600,
        reference="run-1",
    )
    result, blocks = checked(mocks, lambda: hubspot.create_task(task))
    assert result.provider_message_id.startswith("hubspot-task-")
    assert_contract_kept(blocks)
    assert [request_line(b) for b in blocks] == [
        "POST /crm/v3/objects/contacts/batch/upsert",
        "POST /crm/v3/objects/tasks",
    ]


def test_setup_creates_the_group_and_the_properties(mocks: Any) -> None:
    hubspot = HubSpotCrm("pat-na1-test-token", mocks.hubspot_url)
    created, blocks = checked(mocks, lambda: hubspot_setup(hubspot))
    # the mock's example answers name none of ours: everything is created
    assert created == ["group nurture", *(p.name for p in PROPERTIES)]
    assert_contract_kept(blocks)
    assert [request_line(b) for b in blocks] == [
        "GET /crm/v3/properties/contacts/groups",
        "POST /crm/v3/properties/contacts/groups",
        "GET /crm/v3/properties/contacts",
        *["POST /crm/v3/properties/contacts"] * len(PROPERTIES),
    ]


def test_the_mock_refuses_what_hubspot_would_refuse(mocks: Any) -> None:
    """The check is real: a task without associations is a validation error, not retried."""
    hubspot = HubSpotCrm("pat-na1-test-token", mocks.hubspot_url)
    bad = {"properties": {"hs_task_subject": "x"}}

    def post() -> PermanentError:
        with pytest.raises(PermanentError) as refused:
            hubspot._call("POST", "/crm/v3/objects/tasks", bad)
        return refused.value

    refused, [block] = checked(mocks, post)
    assert refused.code == "422"
    assert "✖" in block
    assert "must have required property 'associations'" in block


def test_nurture_crm_setup_from_the_command_line(mocks: Any, tmp_path: Path) -> None:
    nurture = Path(sys.executable).with_name("nurture")
    base = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env = {**base, "NURTURE_HOME": str(tmp_path), "NURTURE_HUBSPOT_API_BASE": mocks.hubspot_url}
    missing = subprocess.run(
        [str(nurture), "crm", "setup"], env=env, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 1
    assert "NURTURE_HUBSPOT_TOKEN" in missing.stderr
    env["NURTURE_HUBSPOT_TOKEN"] = "pat-na1-test-token"
    done, blocks = checked(
        mocks,
        lambda: subprocess.run(
            [str(nurture), "crm", "setup"], env=env, capture_output=True, text=True, check=False
        ),
    )
    assert done.returncode == 0, done.stderr
    assert_contract_kept(blocks)
    assert len(blocks) == 3 + len(PROPERTIES)
    assert "created group nurture" in done.stdout
    assert "created nurture_score" in done.stdout
