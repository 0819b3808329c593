"""The event types an installation knows: those its sequence files name (enroll, exit, goal,
reactions, scoring points) and those the built-in sources record. `nurture_events_ingested_total`
labels any other type `other`, so a caller inventing types cannot grow the series."""

from __future__ import annotations

from worker.definitions.catalog import Catalog

BUILT_IN = frozenset(
    {
        # the API's own and the tracking links
        "email_opened", "email_clicked", "replied", "unsubscribed",
        # vendor sources: forms, Shopify, Twilio
        "form_submitted", "checkout_started", "checkout_completed", "order_placed",
        "resubscribed", "help_requested",
        "sms_sent", "sms_delivered", "sms_failed", "whatsapp_sent",
        # what the worker records
        "email_sent", "email_bounced", "lead_inactive", "segment_changed",
    }
)  # fmt: skip
_last: tuple[Catalog, frozenset[str]] | None = None


def known_event_types(catalog: Catalog) -> frozenset[str]:
    """BUILT_IN and every type `catalog` names (remembered for the latest catalog)."""
    global _last
    if _last is not None and _last[0] is catalog:
        return _last[1]
    named: set[str] = set(BUILT_IN)
    for definition in catalog.sequences.values():
        model = definition.model
        if model.enroll is not None:
            named.update(model.enroll.on)
        named.update(model.exit_on)
        if model.goal is not None:
            named.add(model.goal.event)
        named.update(model.on)
    if catalog.scoring is not None:
        named.update(catalog.scoring.points)
    found = frozenset(named)
    _last = (catalog, found)
    return found
