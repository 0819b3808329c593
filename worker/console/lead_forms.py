"""The forms on a lead page: pause, resume, exit, enroll, unsubscribe or resubscribe (support
and admins), export (support and admins), erase (admins). Each is refused on the server for a
role without the permission (403), checked here (422 with the page saying what to fix, nothing
changed), then done through a service as `user:NAME` and answered with a redirect back to the
lead page and what happened."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request, Response

from worker.accounts.roles import Permission
from worker.console.auth import ConsoleRuntime, Signed, allowed
from worker.console.leads import show_lead, viewer_timezone
from worker.console.pages import secure, see_other
from worker.kit.clock import utcnow, zone
from worker.kit.errors import Conflict, InvalidInput, NotFound
from worker.runtime.process import Runtime
from worker.support import by_hand
from worker.support.enrollments import InvalidField
from worker.support.service import exit_lead, pause_lead, resume_lead
from worker.support.timeline import enrollable

router = APIRouter(prefix="/leads/{lead_id}")
Field = Annotated[str, Form()]
CanAct = Annotated[Signed, Depends(allowed(Permission.LEAD_ACT))]
CanExport = Annotated[Signed, Depends(allowed(Permission.LEAD_EXPORT))]
CanErase = Annotated[Signed, Depends(allowed(Permission.ERASE))]
UNCHANGED = " Nothing was changed."


class Refusal(Exception):
    """What to fix in a form, said on the page (422, or `status_code`)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


@router.post("/pause")
def pause(
    request: Request, lead_id: str, signed: CanAct, runtime: ConsoleRuntime,
    reason: Field = "", until: Field = "", sequence: Field = "", tz: Field = "",
) -> Response:  # fmt: skip
    form = {"pause_reason": reason, "pause_until": until, "pause_sequence": sequence}

    def act() -> str:
        why = _reason(reason, "say why the lead is paused (it is kept with your name)")
        ends = _local_time(until, _zone(request, runtime, tz), "Until")
        if ends is not None and ends <= utcnow():
            raise Refusal(
                f"Until: {until.replace('T', ' ')} ({_zone(request, runtime, tz)}) is in the "
                "past. Give a later time, or leave it empty to pause until someone resumes."
            )
        outcome = pause_lead(runtime, lead_id, sequence=sequence or None, reason=why,
                             until=ends, actor=signed.actor)  # fmt: skip
        return "paused" if outcome.entries else "unchanged"

    return _answer(request, lead_id, signed, runtime, act, form)


@router.post("/resume")
def resume(
    request: Request, lead_id: str, signed: CanAct, runtime: ConsoleRuntime,
    sequence: Field = "", reason: Field = "",
) -> Response:  # fmt: skip
    def act() -> str:
        outcome = resume_lead(runtime, lead_id, sequence=sequence or None,
                              reason=reason.strip() or None, actor=signed.actor)  # fmt: skip
        return "resumed" if outcome.entries else "unchanged"

    return _answer(request, lead_id, signed, runtime, act, {"resume_reason": reason})


@router.post("/exit")
def exit_sequences(
    request: Request, lead_id: str, signed: CanAct, runtime: ConsoleRuntime,
    sequence: Field = "", reason: Field = "",
) -> Response:  # fmt: skip
    form = {"exit_reason": reason, "exit_sequence": sequence}

    def act() -> str:
        why = _reason(reason, "say why the lead leaves (it is kept with your name)")
        outcome = exit_lead(runtime, lead_id, sequence or None, "manual", actor=signed.actor,
                            note=why)  # fmt: skip
        if not outcome.exited:
            where = sequence or "any sequence"
            raise Refusal(f"Sequence: the lead is not enrolled in {where}.")
        return "exited"

    return _answer(request, lead_id, signed, runtime, act, form)


@router.post("/enroll")
def enroll(
    request: Request, lead_id: str, signed: CanAct, runtime: ConsoleRuntime,
    sequence: Field = "", key: Field = "", anchor: Field = "", reason: Field = "", tz: Field = "",
) -> Response:  # fmt: skip
    form = {"enroll_sequence": sequence, "enroll_key": key, "enroll_anchor": anchor,
            "enroll_reason": reason}  # fmt: skip

    def act() -> str:
        choice = next((c for c in enrollable(runtime) if c.id == sequence), None)
        if choice is None:
            raise Refusal("Sequence: choose one of the sequences listed.")
        properties: dict[str, Any] = {}
        if choice.key and key.strip():
            properties[choice.key] = key.strip()
        starts = _local_time(anchor, _zone(request, runtime, tz), "Anchor")
        if choice.anchor and starts is not None:
            properties[choice.anchor] = starts.isoformat()
        try:
            by_hand.enroll_lead(runtime, lead_id, sequence, properties, actor=signed.actor,
                                reason=reason.strip() or None)  # fmt: skip
        except InvalidField as exc:
            label = "Key" if choice.key and exc.field.endswith(f".{choice.key}") else "Anchor"
            raise Refusal(f"{label} ({exc.field}): {exc.detail}.") from exc
        return "enrolled"

    return _answer(request, lead_id, signed, runtime, act, form)


@router.post("/subscription")
def subscription(
    request: Request, lead_id: str, signed: CanAct, runtime: ConsoleRuntime,
    channel: Field = "", action: Field = "", reason: Field = "",
) -> Response:  # fmt: skip
    def act() -> str:
        if action not in ("unsubscribe", "resubscribe"):
            raise Refusal("Choose Unsubscribe or Resubscribe.")
        subscribe = action == "resubscribe"
        changed = by_hand.change_subscription(
            runtime, lead_id, channel, subscribe, actor=signed.actor, reason=reason.strip() or None
        )
        return f"{action}d" if changed else "unchanged"

    return _answer(request, lead_id, signed, runtime, act, {})


@router.post("/export")
def export(lead_id: str, signed: CanExport, runtime: ConsoleRuntime) -> Response:
    """Everything held on the lead, as a JSON file to download."""
    try:
        found = by_hand.export_lead(runtime, lead_id, actor=signed.actor)
    except NotFound as exc:
        return secure(Response(str(exc), status_code=404, media_type="text/plain"))
    name = "".join(c for c in lead_id if c.isalnum())[:32]
    headers = {"Content-Disposition": f'attachment; filename="lead-{name}.json"'}
    body = json.dumps(found, indent=2, ensure_ascii=False)
    return secure(Response(body, media_type="application/json", headers=headers))


@router.post("/erase")
def erase(
    request: Request, lead_id: str, signed: CanErase, runtime: ConsoleRuntime,
    confirm: Field = "", reason: Field = "",
) -> Response:  # fmt: skip
    def act() -> str:
        by_hand.erase_confirmed(runtime, lead_id, confirm, actor=signed.actor,
                                reason=reason.strip() or None)  # fmt: skip
        return "erased"

    return _answer(request, lead_id, signed, runtime, act, {"erase_reason": reason})


def _answer(
    request: Request,
    lead_id: str,
    signed: Signed,
    runtime: Runtime,
    act: Callable[[], str],
    form: dict[str, str],
) -> Response:
    """Back to the lead page saying what was done; the page with what to fix when refused."""
    try:
        done = act()
    except NotFound as exc:
        return show_lead(request, signed, runtime, lead_id, message=_sentence(exc),
                         status_code=404, form=form)  # fmt: skip
    except (Refusal, InvalidInput, Conflict) as exc:
        status = exc.status_code if isinstance(exc, Refusal) else 409
        status = 422 if isinstance(exc, InvalidInput) else status
        return show_lead(request, signed, runtime, lead_id, message=_sentence(exc) + UNCHANGED,
                         status_code=status, form=form)  # fmt: skip
    return see_other(request, f"/console/leads/{quote(lead_id, safe='')}?done={done}")


def _reason(text: str, what: str) -> str:
    reason = text.strip()
    if not reason:
        raise Refusal(f"Reason: {what}.")
    return reason[:500]


def _zone(request: Request, runtime: Runtime, tz: str) -> str:
    return viewer_timezone(request, runtime, tz)


def _local_time(text: str, zone_name: str, label: str) -> datetime | None:
    """A `datetime-local` value read in the viewer's zone; None when empty."""
    if not text.strip():
        return None
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        example = "2026-12-14T09:00"
        raise Refusal(f"{label}: {text[:40]!r} is not a date and time like {example}.") from exc
    found = zone(zone_name)
    assert found is not None
    return naive.replace(tzinfo=found) if naive.tzinfo is None else naive


def _sentence(exc: Exception) -> str:
    words = str(exc)
    return words[:1].upper() + words[1:] + ("" if words.endswith(".") else ".")
