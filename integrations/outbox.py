"""Development providers: every message and CRM change becomes a file under `./outbox/`.

A repeated send of the same step run rewrites the same file, so the folder shows what a
provider would have received once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from integrations import mime
from integrations.ports import (
    CrmTaskRequest,
    EmailMessage,
    PushResult,
    SendResult,
    TextMessage,
)
from worker.kit.clock import utcnow

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _name(reference: str) -> str:
    return _SAFE.sub("_", reference) or "message"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)  # readers never see half a file


class OutboxEmail:
    def __init__(self, folder: Path) -> None:
        self.folder = folder / "email"

    def send(self, message: EmailMessage) -> SendResult:
        reference = message.headers.get("X-Nurture-Step-Run", message.to)
        _write(self.folder / f"{_name(reference)}.eml", mime.build(message).as_string())
        return SendResult(provider_message_id=f"outbox-{_name(reference)}")


class OutboxText:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send(self, message: TextMessage) -> SendResult:
        record = {
            "to": message.to,
            "channel": message.channel,
            "body": message.body,
            "content_sid": message.content_sid,
            "variables": message.variables,
            "reference": message.reference,
        }
        path = self.folder / message.channel / f"{_name(message.reference)}.json"
        _write(path, json.dumps(record, indent=2, ensure_ascii=False))
        return SendResult(provider_message_id=f"outbox-{_name(message.reference)}", segments=1)


class OutboxCrm:
    def __init__(self, folder: Path) -> None:
        self.folder = folder / "crm"

    def create_task(self, task: CrmTaskRequest) -> SendResult:
        record = {**task.__dict__, "created_at": utcnow().isoformat()}
        _write(
            self.folder / "tasks" / f"{_name(task.reference)}.json", json.dumps(record, indent=2)
        )
        return SendResult(provider_message_id=f"outbox-task-{_name(task.reference)}")

    def push(self, changes: list[dict[str, Any]]) -> PushResult:
        """The same JSON the webhook CRM POSTs, one change a line, in order per contact."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "changes.jsonl").open("a", encoding="utf-8") as out:
            for change in changes:
                out.write(json.dumps(change, ensure_ascii=False, default=str) + "\n")
        return PushResult()


class NoCrm:
    """`NURTURE_CRM_BACKEND=none`: tasks and changes go nowhere."""

    def create_task(self, task: CrmTaskRequest) -> SendResult:
        return SendResult(provider_message_id=f"none-task-{_name(task.reference)}")

    def push(self, changes: list[dict[str, Any]]) -> PushResult:
        return PushResult()
