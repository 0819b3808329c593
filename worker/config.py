"""Settings from the environment (prefix `NURTURE_`, SPEC §7): one object, read once."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import phonenumbers
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="ignore")

    home: Path = Path(".nurture")
    database_url: str | None = None
    broker_url: str | None = None
    sequences_dir: Path = Path("sequences")
    templates_dir: Path = Path("templates")
    outbox_dir: Path = Path("outbox")
    public_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr | None = None
    api_tokens: str | None = None
    default_timezone: str = "UTC"
    tracking: Literal["on", "off"] = "on"
    default_region: str = "US"
    """The country a phone number without a `+` code is read in by the console's search
    (ISO 3166 two letters: US, DE, GB …)."""
    copy_retention_days: int = Field(default=90, ge=1)
    """How long the copy of each email as sent is kept for the console (then pruned)."""

    email_backend: Literal["smtp", "outbox"] = "outbox"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    email_from: str = "Nurture <nurture@localhost>"
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key: SecretStr | None = None
    """PEM text, or the path of a file holding it."""
    smtp_timeout: float = 30.0
    smtp_ca_file: Path | None = None
    """Extra CAs to trust for the relay's TLS certificate (a private CA; tests). Certificates
    are always verified."""
    unsubscribe_mailto: str | None = None
    """The address of the `mailto:` List-Unsubscribe (`off`: none); default `unsubscribe@` the
    domain of EMAIL_FROM. Its subject carries the signed token (`unsubscribe <token>`)."""

    sms_backend: Literal["twilio", "outbox"] = "outbox"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_whatsapp_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_base: str | None = None

    crm_backend: Literal["hubspot", "webhook", "outbox", "none"] = "outbox"
    hubspot_token: SecretStr | None = None
    hubspot_api_base: str = "https://api.hubapi.com"
    hubspot_notes: bool = False
    """A HubSpot note on the contact for every message sent."""
    crm_webhook_url: str | None = None
    crm_webhook_secret: SecretStr | None = None
    crm_push_interval: float = 5.0
    """Seconds between pushes of the CRM outbox (the `crm.push` task)."""

    shopify_webhook_secret: SecretStr | None = None
    form_secret: SecretStr | None = None

    # inbound email (docs/inbox.md): replies, bounces and complaints read from an IMAP mailbox
    reply_address: str | None = None
    """`reply@example.com`: emails without a template `reply_to:` get `reply+TOKEN@…`."""
    imap_host: str | None = None
    imap_port: int | None = None
    """Default 993 with `ssl` security, else 143."""
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    imap_security: Literal["ssl", "starttls", "none"] | None = None
    """ssl (IMAPS) | starttls (refuses to log in when the server does not offer it) | none
    (plain text); unset: from `imap_ssl`, the older form (true: ssl, false: none)."""
    imap_ssl: bool = True
    imap_ca_file: Path | None = None
    """Extra CAs to trust for the mailbox's TLS certificate (a private CA; tests)."""
    imap_folder: str = "INBOX"
    imap_processed_flag: str = "$NurtureProcessed"
    imap_processed_folder: str | None = None
    """When set, processed messages move there (after being flagged); else they stay put."""
    inbox_poll_interval: float = 60.0

    # the scheduler's rhythm (seconds); tests shorten them
    dispatch_interval: float = 1.0
    dispatch_batch: int = 200
    send_batch: int = 20
    """Steps one send task claims, hands over and records together (one transaction each)."""
    sweep_interval: float = 15.0
    lease_seconds: float = 60.0
    unknown_after_seconds: float = 600.0
    """A send handed to a provider and not recorded after this long is marked `unknown`."""
    fault_point: str | None = None
    """Tests only: a named point where a send task stops for `fault_seconds`, so a test can
    kill it there: `after_claim` (claimed, nothing handed over), `mid_batch` (`fault_after`
    messages accepted and recorded, none in doubt), `after_send` (the provider accepted the
    `fault_after`-th message, not recorded yet), `before_record` (every message recorded, the
    write-back into the leads' worlds not done); in the API, `before_drain` (events answered
    202 `queued` and written to the intake, not applied yet)."""
    fault_seconds: float = 30.0
    fault_after: int = 1
    """The message of a batch (1 = the first) at which `mid_batch` and `after_send` stop."""

    # events in (issue 16): single requests coalesced into the batch path, the early answer
    coalesce_max: int = Field(default=200, ge=1, le=1000)
    """Single events (/v1/events, form and Shopify webhooks) one API process applies together
    at most, through the set-based batch path."""
    coalesce_parallel: int = Field(default=1, ge=1, le=16)
    """Groups of single events one API process applies at a time (a group never overtakes an
    earlier one naming the same lead)."""
    coalesce_window_ms: float = Field(default=3.0, ge=0.0, le=1000.0)
    """How long a request arriving at an idle API process may wait for others, only when the
    group just answered held several (their clients' next requests are on the way; it goes as
    soon as as many wait). A lone client's request never waits; 0 turns waiting off."""
    respond_async_sources: str = ""
    """Comma-separated sources answered early (202 `queued`, applied from the durable intake)
    without a `Prefer: respond-async` header: `form`, `shopify` (vendors cannot send headers),
    `api`."""
    intake_sweep_interval: float = 5.0
    """Seconds between beat's sweeps of the intake (what a killed API process left queued)."""
    # issue 16, several beats and retention (docs/operations.md)
    beat_lease_seconds: float = Field(default=10.0, gt=0)
    """How long the leading beat's lease lasts: a standby takes over this long (plus one
    `beat_renew_seconds`) after the leader dies."""
    beat_renew_seconds: float = Field(default=2.0, gt=0)
    """Seconds between renewals of the lease (leader) and attempts to take it (standbys)."""
    crm_outbox_retention_days: int = Field(default=30, ge=1)
    """Changes pushed to the CRM are deleted from the outbox this many days after the push
    (pending and refused ones stay)."""
    event_retention_days: int = Field(default=0, ge=0)
    """Raw events are deleted this many days after they arrived; 0 keeps them forever. Must
    exceed every sequence's goal window (`goal.within`)."""
    idempotency_retention_days: int = Field(default=30, ge=3)
    """The ids of pruned events (event ids, vendor delivery ids, open keys) still answer
    `duplicate` this many days after the event arrived (vendors retry for up to 3 days)."""
    # -- outcome counters (issue 16, docs/stats.md) --
    counters_compact_interval: float = Field(default=600.0, gt=0)
    """Seconds between compactions of the outcome counters (each closed hour's delta rows
    folded into one row per key)."""
    # metrics (docs/metrics.md): the ports where `nurture worker` and `nurture beat` serve
    # their own /metrics (0: none), and where each role's processes keep their counters
    worker_metrics_port: int = Field(default=9101, ge=0, le=65535)
    beat_metrics_port: int = Field(default=9102, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    """The address those ports listen on (Prometheus scrapes them from another container)."""
    metrics_dir: Path | None = None
    """Where each role keeps its counters (prometheus-client's multiprocess files), a folder per
    role and port inside, emptied when the process starts; default `<home>/metrics`."""
    # deploy (issue 16): Flower (docs/deploy.md)
    worker_events: bool = False
    """Celery task events (task received, started, succeeded …) for Flower: a worker sends
    them, and every process sends one when it queues a task (`nurture worker --events`)."""

    @model_validator(mode="after")
    def _renew_within_lease(self) -> Settings:
        if self.beat_renew_seconds * 2 > self.beat_lease_seconds:
            raise ValueError(
                f"NURTURE_BEAT_RENEW_SECONDS ({self.beat_renew_seconds}) must be at most half "
                f"of NURTURE_BEAT_LEASE_SECONDS ({self.beat_lease_seconds}): a leader renews "
                "several times within one lease"
            )
        return self

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"{value[:20]!r} is not a region phone numbers are known for: give ISO 3166 "
                "two letters, like US, DE or GB"
            )
        return region


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()
