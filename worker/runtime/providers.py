"""The one place providers are chosen by name (SPEC §7): email, texts and the CRM, each an
outbox on the embedded defaults."""

from __future__ import annotations

from integrations.outbox import NoCrm, OutboxCrm, OutboxEmail, OutboxText
from integrations.ports import Crm, EmailSender, TextSender
from worker.config import Settings


def providers(config: Settings) -> tuple[EmailSender, TextSender, Crm]:
    return email_for(config), text_for(config), crm_for(config)


def email_for(config: Settings) -> EmailSender:
    if config.email_backend == "smtp":
        from integrations.smtp import SmtpSender

        return SmtpSender.from_settings(config)
    return OutboxEmail(config.outbox_dir)


def text_for(config: Settings) -> TextSender:
    if config.sms_backend == "twilio":
        from integrations.twilio import TwilioSender

        return TwilioSender.from_settings(config)
    return OutboxText(config.outbox_dir)


def crm_for(config: Settings) -> Crm:
    """The CRM backend `NURTURE_CRM_BACKEND` names."""
    if config.crm_backend == "hubspot":
        from integrations.hubspot import HubSpotCrm

        return HubSpotCrm.from_settings(config)
    if config.crm_backend == "webhook":
        from integrations.crm_webhook import WebhookCrm

        return WebhookCrm.from_settings(config)
    if config.crm_backend == "none":
        return NoCrm()
    return OutboxCrm(config.outbox_dir)
