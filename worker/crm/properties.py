"""The contact properties Nurture writes in the CRM, and `nurture crm setup` creating them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from integrations.hubspot import HubSpotCrm


@dataclass(frozen=True)
class ContactProperty:
    name: str
    label: str
    type: str
    field_type: str
    description: str


PROPERTY_GROUP = "nurture"
PROPERTIES = (
    ContactProperty("nurture_sequences", "Nurture sequences", "string", "text",
                    "The sequences the contact is enrolled in now, comma-separated."),
    ContactProperty("nurture_status", "Nurture status", "string", "text",
                    "active, paused, completed or exited (the latest enrollment); empty if none."),
    ContactProperty("nurture_step", "Nurture step", "string", "text",
                    "The last step that went out, as sequence/step (a message or a CRM task)."),
    ContactProperty("nurture_last_message", "Nurture last message", "string", "text",
                    "The last message sent, as sequence/step."),
    ContactProperty("nurture_last_message_channel", "Nurture last message channel", "string",
                    "text", "email, sms or whatsapp."),
    ContactProperty("nurture_last_message_status", "Nurture last message status", "string",
                    "text", "accepted, then what the provider reports: delivered, failed …"),
    ContactProperty("nurture_last_message_at", "Nurture last message at", "datetime", "date",
                    "When the last message was accepted by the provider."),
    ContactProperty("nurture_score", "Nurture score", "number", "number",
                    "The lead score, rounded to a whole number."),
    ContactProperty("nurture_segment", "Nurture segment", "string", "text",
                    "The scoring segment (hot, warm …); empty below every threshold."),
    ContactProperty("nurture_unsubscribed", "Nurture unsubscribed", "bool", "booleancheckbox",
                    "The person asked to stop on some channel (unsubscribe, STOP, complaint)."),
    ContactProperty("nurture_suppressions", "Nurture suppressions", "string", "text",
                    "channel:reason for every suppressed channel, e.g. email:bounced."),
    ContactProperty("nurture_exit_reason", "Nurture exit reason", "string", "text",
                    "Why the last enrollment that ended early was exited."),
)  # fmt: skip


def hubspot_setup(hubspot: HubSpotCrm) -> list[str]:
    """`nurture crm setup`: the property group and every property in PROPERTIES."""
    group = {"name": PROPERTY_GROUP, "label": "Nurture"}
    return hubspot.ensure_properties(group, [p.__dict__ for p in PROPERTIES])
