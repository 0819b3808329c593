"""The generic webhook CRM: every change and every task POSTed as JSON, signed the Standard
Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`; a `whsec_` secret), so
Zoho, Pipedrive or an in-house CRM can listen.

One POST per contact delivery, its changes in order. A retried delivery sends the same body
under the same `webhook-id` (receivers deduplicate on it); only the timestamp and signature
are new. 2xx is done; 429, 5xx, 408, 401/403 and a lost connection are retried; any other 4xx
is recorded and not retried.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from standardwebhooks import Webhook

from integrations.hubspot import http_error
from integrations.ports import (
    CredentialsRefused,
    CrmTaskRequest,
    PermanentError,
    PushResult,
    RateLimited,
    SendResult,
    TemporaryError,
)
from worker.kit.clock import utcnow

if TYPE_CHECKING:
    from worker.config import Settings


class WebhookCrm:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 15.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.url = url
        self.signer = Webhook(secret)
        self.client = client or httpx.Client(timeout=timeout)
        self.clock = clock

    @classmethod
    def from_settings(cls, config: Settings) -> WebhookCrm:
        if not config.crm_webhook_url or config.crm_webhook_secret is None:
            raise ValueError(
                "NURTURE_CRM_BACKEND=webhook needs NURTURE_CRM_WEBHOOK_URL and "
                "NURTURE_CRM_WEBHOOK_SECRET (whsec_ and base64)"
            )
        return cls(config.crm_webhook_url, config.crm_webhook_secret.get_secret_value())

    def push(self, changes: list[dict[str, Any]]) -> PushResult:
        """One POST per delivery (a contact's changes); after a temporary failure the rest
        wait too: a struggling receiver is not hammered."""
        deliveries: dict[str, list[dict[str, Any]]] = {}
        for change in changes:
            deliveries.setdefault(change["delivery"], []).append(change)
        rejected: dict[str, str] = {}
        deferred: dict[str, str] = {}
        wait: float | None = None
        for delivery_id, batch in deliveries.items():
            lead_id = batch[-1]["lead"]["id"]
            if deferred:
                deferred[lead_id] = "waiting: an earlier delivery failed"
                continue
            body = {
                "type": "nurture.crm.changes",
                "timestamp": batch[-1]["at"],
                "data": {"lead": batch[-1]["lead"], "changes": batch},
            }
            try:
                self.post(delivery_id, body)
            except CredentialsRefused:
                raise  # us refused, not this delivery (a redelivery is deduplicated)
            except TemporaryError as exc:
                deferred[lead_id] = str(exc)
                wait = exc.retry_after if isinstance(exc, RateLimited) else None
            except PermanentError as exc:
                rejected[lead_id] = str(exc)
        return PushResult(rejected=rejected, deferred=deferred, retry_after=wait)

    def create_task(self, task: CrmTaskRequest) -> SendResult:
        now = self.clock()
        due = now + timedelta(seconds=task.due_after_seconds)
        body = {
            "type": "nurture.crm.task",
            "timestamp": now.isoformat(),
            "data": {
                "email": task.email,
                "subject": task.subject,
                "body": task.body,
                "priority": task.priority,
                "type": task.task_type,
                "due_at": due.isoformat(),
                "reference": task.reference,
            },
        }
        message_id = f"task-{task.reference}"
        self.post(message_id, body)
        return SendResult(provider_message_id=message_id)

    def post(self, message_id: str, body: dict[str, Any]) -> None:
        """POST one signed message; raises TemporaryError or PermanentError."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
        now = self.clock()
        headers = {
            "content-type": "application/json",
            "user-agent": "nurture-crm-webhook",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(message_id, now, data),
        }
        try:
            response = self.client.post(self.url, content=data.encode(), headers=headers)
        except httpx.TransportError as exc:
            # receivers deduplicate on webhook-id: sending again is always safe
            raise TemporaryError(f"CRM webhook unreachable: {exc}", code="connection") from exc
        status = response.status_code
        if status < 300:
            return
        message = f"CRM webhook {status}: {response.text[:300]}"
        raise http_error(status, message, response.headers, provider="webhook")
