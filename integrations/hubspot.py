"""HubSpot over its CRM v3 API: contacts upserted by email with Nurture's properties (batched),
a note per sent message when enabled, a task per `crm_task`, and the custom properties set up.

Failures come back as the ports' two kinds: 429 (`RateLimited`, with Retry-After), 5xx and a
lost connection are temporary; a refused token (401/403) is `CredentialsRefused`, which holds
the CRM while it is fixed; any other 4xx (a validation error) is permanent.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from integrations.ports import (
    CredentialsRefused,
    CrmTaskRequest,
    PermanentError,
    ProviderError,
    PushResult,
    RateLimited,
    SendResult,
    TemporaryError,
)
from worker.kit.clock import utcnow

if TYPE_CHECKING:
    from worker.config import Settings

BATCH = 100
"""Inputs per batch request (HubSpot's limit)."""
CONTACTS = "/crm/v3/objects/contacts/batch/upsert"
NOTE_TO_CONTACT = 202
TASK_TO_CONTACT = 204
RETRIED_STATUSES = {408}
"""Temporary besides 429 and 5xx."""
REFUSED_CREDENTIALS = {401, 403}
"""A refused token is a setting to fix, not a change to drop: the CRM is held meanwhile."""


def hubspot_time(at: datetime) -> str:
    """hs_timestamp and datetime properties: ISO 8601 in UTC with milliseconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class HubSpotCrm:
    def __init__(
        self,
        token: str,
        base_url: str = "https://api.hubapi.com",
        *,
        notes: bool = False,
        client: httpx.Client | None = None,
        timeout: float = 15.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.client = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.notes = notes
        self.clock = clock

    @classmethod
    def from_settings(cls, config: Settings) -> HubSpotCrm:
        if config.hubspot_token is None:
            raise ValueError("NURTURE_CRM_BACKEND=hubspot needs NURTURE_HUBSPOT_TOKEN")
        return cls(
            config.hubspot_token.get_secret_value(),
            config.hubspot_api_base,
            notes=config.hubspot_notes,
        )

    # -- the Crm port ------------------------------------------------------------------------

    def push(self, changes: list[dict[str, Any]]) -> PushResult:
        """One upsert per 100 contacts with each contact's latest properties, then its notes."""
        latest: dict[str, dict[str, Any]] = {}
        for change in changes:
            latest[change["lead"]["id"]] = change
        rejected: dict[str, str] = {}
        inputs: list[dict[str, Any]] = []
        leads_by_email: dict[str, str] = {}
        for lead_id, change in latest.items():
            address = (change["lead"].get("email") or "").strip().lower()
            if not address:
                rejected[lead_id] = "no email: HubSpot contacts are matched by email"
                continue
            properties = {**change["contact"], "email": address}
            inputs.append({"idProperty": "email", "id": address, "properties": properties})
            leads_by_email[address] = lead_id
        contact_ids: dict[str, str] = {}
        for chunk in _chunks(inputs, BATCH):
            answer = self._call("POST", CONTACTS, {"inputs": chunk})
            found, refused = _upserted(answer, chunk)
            contact_ids.update({leads_by_email[e]: i for e, i in found.items()})
            rejected.update({leads_by_email[e]: why for e, why in refused.items()})
        if self.notes:
            self._notes(changes, contact_ids)
        return PushResult(rejected=rejected)

    def create_task(self, task: CrmTaskRequest) -> SendResult:
        """A task associated to the contact (upserted by email first: the task needs its id)."""
        associations = []
        if task.email:
            contact_id = self._contact_id(task.email)
            associations.append(_association(contact_id, TASK_TO_CONTACT))
        due = self.clock() + timedelta(seconds=task.due_after_seconds)
        properties = {
            "hs_timestamp": hubspot_time(due),
            "hs_task_subject": task.subject,
            "hs_task_body": task.body or "",
            "hs_task_priority": task.priority.upper(),
            "hs_task_type": task.task_type.upper(),
            "hs_task_status": "NOT_STARTED",
        }
        body = {"properties": properties, "associations": associations}
        # not idempotent: a request that may have arrived is not sent again (SPEC §8)
        answer = self._call("POST", "/crm/v3/objects/tasks", body, idempotent=False)
        return SendResult(provider_message_id=f"hubspot-task-{answer.get('id', '')}")

    # -- nurture crm setup -------------------------------------------------------------------

    def ensure_properties(
        self, group: Mapping[str, str], properties: Sequence[Mapping[str, str]]
    ) -> list[str]:
        """Create the property group and every property missing on contacts; returns what
        was created. Each property: name, label, type, field_type, description."""
        created: list[str] = []
        groups = self._call("GET", "/crm/v3/properties/contacts/groups").get("results", [])
        if group["name"] not in {g.get("name") for g in groups}:
            body = {"name": group["name"], "label": group["label"], "displayOrder": -1}
            self._call("POST", "/crm/v3/properties/contacts/groups", body)
            created.append(f"group {group['name']}")
        existing = self._call("GET", "/crm/v3/properties/contacts").get("results", [])
        names = {p.get("name") for p in existing}
        for spec in properties:
            if spec["name"] in names:
                continue
            self._call("POST", "/crm/v3/properties/contacts", _property(spec, group["name"]))
            created.append(spec["name"])
        return created

    # -- requests ----------------------------------------------------------------------------

    def _contact_id(self, address: str) -> str:
        address = address.strip().lower()
        chunk = [{"idProperty": "email", "id": address, "properties": {"email": address}}]
        answer = self._call("POST", CONTACTS, {"inputs": chunk})
        found, refused = _upserted(answer, chunk)
        if address in refused or address not in found:
            why = refused.get(address, "HubSpot named no contact for the upsert")
            raise PermanentError(why, code="contact")
        return found[address]

    def _notes(self, changes: list[dict[str, Any]], contact_ids: dict[str, str]) -> None:
        inputs = []
        for change in changes:
            contact_id = contact_ids.get(change["lead"]["id"])
            if change["type"] != "step_sent" or contact_id is None:
                continue
            properties = {"hs_timestamp": change["at"], "hs_note_body": note_body(change["data"])}
            inputs.append(
                {
                    "properties": properties,
                    "associations": [_association(contact_id, NOTE_TO_CONTACT)],
                }
            )
        for chunk in _chunks(inputs, BATCH):
            self._call("POST", "/crm/v3/objects/notes/batch/create", {"inputs": chunk})

    def _call(
        self, method: str, path: str, body: Any = None, *, idempotent: bool = True
    ) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, json=body, headers=self.headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TemporaryError(f"HubSpot unreachable: {exc}", code="connection") from exc
        except httpx.TransportError as exc:
            if idempotent:
                raise TemporaryError(f"HubSpot connection lost: {exc}", code="connection") from exc
            raise ProviderError(f"HubSpot may have taken it: {exc}", code="ambiguous") from exc
        return _answer(response)


def _answer(response: httpx.Response) -> dict[str, Any]:
    status = response.status_code
    if status < 300:
        if not response.content:
            return {}
        found = response.json()
        return found if isinstance(found, dict) else {"results": found}
    raise http_error(status, _message(response), response.headers)


def http_error(
    status: int, message: str, headers: Mapping[str, str], *, provider: str = "hubspot"
) -> ProviderError:
    """A failed HTTP answer as the ports' two kinds (HubSpot and the CRM webhook alike)."""
    if status == 429:
        return RateLimited(message, code="429", retry_after=retry_after(headers))
    if status in REFUSED_CREDENTIALS:
        return CredentialsRefused(message, provider=provider, code=str(status))
    if status >= 500 or status in RETRIED_STATUSES:
        return TemporaryError(message, code=str(status))
    return PermanentError(message, code=str(status))


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HubSpot {response.status_code}: {response.text[:300]}"
    if isinstance(body, dict):
        detail = body.get("message") or body.get("category") or ""
        return f"HubSpot {response.status_code}: {detail}"[:1000]
    return f"HubSpot {response.status_code}"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds, or as an HTTP date."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - utcnow()).total_seconds())


def _upserted(
    answer: dict[str, Any], chunk: list[dict[str, Any]]
) -> tuple[dict[str, str], dict[str, str]]:
    """(email → contact id, email → why refused) for one batch upsert's answer."""
    results = answer.get("results") or []
    found: dict[str, str] = {}
    for result in results:
        address = str((result.get("properties") or {}).get("email") or "").lower()
        if address and result.get("id") is not None:
            found[address] = str(result["id"])
    wanted = [str(i["id"]) for i in chunk]
    if not found and len(results) == len(wanted):
        # an answer without the email echoed: results come in input order
        found = {address: str(r.get("id")) for address, r in zip(wanted, results, strict=True)}
    refused: dict[str, str] = {}
    if answer.get("errors"):
        why = "; ".join(str(e.get("message", "")) for e in answer["errors"])[:1000]
        refused = {address: why for address in wanted if address not in found}
    return found, refused


def _association(contact_id: str, type_id: int) -> dict[str, Any]:
    return {
        "to": {"id": contact_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }


def _property(spec: Mapping[str, str], group: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": spec["name"],
        "label": spec["label"],
        "type": spec["type"],
        "fieldType": spec["field_type"],
        "groupName": group,
        "description": spec["description"],
    }
    if spec["type"] == "bool":
        body["options"] = [
            {"label": "Yes", "value": "true", "hidden": False, "displayOrder": 0},
            {"label": "No", "value": "false", "hidden": False, "displayOrder": 1},
        ]
    return body


def note_body(data: Mapping[str, Any]) -> str:
    channel = data.get("channel") or "message"
    subject = f" “{data['subject']}”" if data.get("subject") else ""
    return f"Nurture sent {channel}{subject} ({data.get('sequence')}/{data.get('step')})"


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
