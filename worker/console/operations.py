"""The operations page, `/console/operations`: everyone reads it; holding every send needs an
admin, pausing, resuming or retiring a sequence a marketer or an admin (checked here on each
POST, whatever the page showed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response

from worker.accounts.roles import Permission
from worker.console.auth import ConsoleRuntime, Signed, SignedDep, allowed
from worker.console.pages import page, see_other
from worker.kit.errors import InvalidInput, NotFound
from worker.runtime.process import Runtime
from worker.support import operations as ops

router = APIRouter(prefix="/operations")
PAGE = "/console/operations"
Field = Annotated[str, Form()]
CanHold = Annotated[Signed, Depends(allowed(Permission.SENDS_HOLD))]
CanSequence = Annotated[Signed, Depends(allowed(Permission.SEQUENCE_ACT))]
CONFIRM_HOLD = "tick “I understand nothing will be sent until released” to hold every send"
DONE = {
    "held": "Every send is held. Nothing goes out until you release them.",
    "released": "Sends are released: the steps they held are due now.",
    "paused": "The sequence is paused: its steps wait.",
    "resumed": "The sequence is running again: the steps it held are due now.",
    "retired": "The sequence is retired: its enrollments have ended.",
}


@router.get("")
def operations_page(
    request: Request, signed: SignedDep, runtime: ConsoleRuntime, done: str = ""
) -> Response:
    return _page(request, signed, runtime, message=DONE.get(done))


@router.post("/sends/hold")
def hold_sends(
    request: Request,
    signed: CanHold,
    runtime: ConsoleRuntime,
    reason: Field = "",
    confirm: Field = "",
) -> Response:
    if not reason.strip():
        return _refused(request, signed, runtime, "Reason: say why every send is held.")
    if confirm != "yes":
        return _refused(request, signed, runtime, _sentence(ValueError(CONFIRM_HOLD)))
    ops.hold_sends(runtime, actor=signed.actor, reason=reason)
    return see_other(request, PAGE + "?done=held")


@router.post("/sends/release")
def release_sends(
    request: Request, signed: CanHold, runtime: ConsoleRuntime, reason: Field = ""
) -> Response:
    ops.release_sends(runtime, actor=signed.actor, reason=reason.strip() or None)
    return see_other(request, PAGE + "?done=released")


@router.post("/sequences/{sequence_id}/pause")
def pause_sequence(
    request: Request,
    sequence_id: str,
    signed: CanSequence,
    runtime: ConsoleRuntime,
    reason: Field = "",
    confirm: Field = "",
) -> Response:
    if confirm != "yes":
        message = f"Tick the box to hold every send of {sequence_id}."
        return _refused(request, signed, runtime, message)

    def act() -> object:
        ops.pause_sequence(runtime, sequence_id, actor=signed.actor, reason=reason)
        return None

    return _act(request, signed, runtime, "paused", act)


@router.post("/sequences/{sequence_id}/resume")
def resume_sequence(
    request: Request,
    sequence_id: str,
    signed: CanSequence,
    runtime: ConsoleRuntime,
    reason: Field = "",
) -> Response:
    def act() -> object:
        ops.resume_sequence(runtime, sequence_id, actor=signed.actor, reason=reason.strip() or None)
        return None

    return _act(request, signed, runtime, "resumed", act)


@router.post("/sequences/{sequence_id}/retire")
def retire_sequence(
    request: Request,
    sequence_id: str,
    signed: CanSequence,
    runtime: ConsoleRuntime,
    reason: Field = "",
    confirm: Field = "",
) -> Response:
    if confirm != "yes":
        message = f"Tick the box to end the enrollments of {sequence_id}."
        return _refused(request, signed, runtime, message)

    def act() -> object:
        return ops.retire_sequence(runtime, sequence_id, actor=signed.actor, reason=reason)

    return _act(request, signed, runtime, "retired", act)


def _act(
    request: Request, signed: Signed, runtime: Runtime, done: str, action: Callable[[], object]
) -> Response:
    """Run the action; the page with the reason when it is refused, else back to the page."""
    try:
        action()
    except NotFound as exc:
        return _refused(request, signed, runtime, _sentence(exc), status_code=404)
    except InvalidInput as exc:
        return _refused(request, signed, runtime, _sentence(exc))
    return see_other(request, f"{PAGE}?done={done}")


def _sentence(exc: Exception) -> str:
    words = str(exc)
    return words[:1].upper() + words[1:] + ("" if words.endswith(".") else ".")


def _refused(
    request: Request, signed: Signed, runtime: Runtime, message: str, status_code: int = 422
) -> Response:
    """The page again with what to fix; nothing was changed."""
    return _page(request, signed, runtime, message=message, status_code=status_code)


def _page(
    request: Request,
    signed: Signed,
    runtime: Runtime,
    *,
    message: str | None = None,
    status_code: int = 200,
) -> Response:
    return page(
        request, "operations.html", signed, status_code=status_code, message=message,
        o=ops.overview(runtime),
        can_hold=signed.can(Permission.SENDS_HOLD),
        can_sequence=signed.can(Permission.SEQUENCE_ACT),
    )  # fmt: skip
