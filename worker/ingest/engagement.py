"""Opens and clicks of a message (the tracking pixel and redirect) recorded as events of its
lead, once per key, like any other event."""

from __future__ import annotations

from worker.ingest.intake import apply
from worker.ingest.schemas import EventIn, LeadIn
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.tables import LeadRow, StepRunRow


def record_engagement(
    runtime: Runtime, data: dict[str, str], kind: str, key: str, extra: dict[str, str]
) -> None:
    """Record an open or click of a message still on file; never for an erased lead."""
    with transaction(runtime.database) as session:
        run = session.get(StepRunRow, data["r"])
        lead = session.get(LeadRow, data["l"])
        if run is None or lead is None or run.lead_id != lead.id or lead.erased:
            return
        identity = next(
            ({n: v} for n in ("external_id", "email", "phone") if (v := getattr(lead, n))), None
        )
        properties = {"sequence": run.sequence_id, "step": run.step_id, "step_run": run.id}
    if identity is None:
        return
    event = EventIn(
        id=key,
        type=kind,
        lead=LeadIn.model_validate(identity),
        properties={**properties, **extra},
    )
    apply(runtime, event, source="tracking")
