"""The sample emails are not spam: every email template under templates/, rendered for the
sample lead the way the worker sends it (tracking, unsubscribe headers, DKIM, over SMTP), as it
arrived at an SMTP server, scores under 3.0 with SpamAssassin's local rules (no network tests).
"""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integrations.ports import SendResult
from integrations.smtp import SmtpSender
from tests.servers.smtp import RawSink, smtp_server
from worker.config import Settings
from worker.definitions import models
from worker.definitions.catalog import Catalog
from worker.engine.checks import Go
from worker.engine.schedule import channel_content, step_channel
from worker.kit.ids import new_id
from worker.kit.signing import unsubscribe_url
from worker.rendering.samples import sample_context
from worker.runtime.process import load
from worker.sending.compose import compose
from worker.sending.email import email_message
from worker.sending.tracking import track

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
THRESHOLD = 3.0
LEAD = {"email": "ana.ito@example.org", "first_name": "Ana", "last_name": "Ito"}


@dataclass(frozen=True)
class Sample:
    template: str
    channel: str  # email | notify
    sequence: str | None
    step: str
    tracking: models.Tracking | None
    to: str


def samples(catalog: Catalog) -> list[Sample]:
    """Every email template once: as the step (or `send:` or `notify:` reaction) that uses it
    first, else on its own (a tracked marketing email)."""
    found: dict[str, Sample] = {}
    for sequence_id, definition in sorted(catalog.sequences.items()):
        model = definition.model
        steps: list[models.AnyStep | models.OneOffSend] = list(model.steps)
        for reactions in model.on.values():
            steps += [r.send for r in reactions if isinstance(r, models.SendReaction)]
            for alert in (r.notify for r in reactions if isinstance(r, models.NotifyReaction)):
                found.setdefault(
                    alert.template,
                    Sample(alert.template, "notify", sequence_id, "notify", None, alert.email),
                )
        for step in steps:
            count = len(step.variants) if isinstance(step, models.VariantsStep) else 1
            for variant in range(count):
                channel, content = step_channel(step, variant), channel_content(step, variant)
                if channel == "email" and isinstance(content, str):
                    template, to = content, LEAD["email"]
                elif isinstance(content, models.Notify):
                    channel, template, to = "notify", content.template, content.email
                else:
                    continue
                found.setdefault(
                    template,
                    Sample(template, channel, sequence_id, step.id, model.tracking, to),
                )
    templates = catalog.templates
    assert templates is not None
    for channel, name in templates.names():
        if channel == "email" and name not in found:
            found[name] = Sample(name, "email", None, "sample", None, LEAD["email"])
    return [found[name] for name in sorted(found)]


def send_sample(config: Settings, catalog: Catalog, sample: Sample, sender: SmtpSender) -> str:
    """Render and send `sample` as the worker would; its step run id."""
    lead_id, step_run_id = new_id(), new_id()
    definition = catalog.sequence(sample.sequence) if sample.sequence else None
    values = sample_context(
        LEAD, sequence=sample.sequence or "sample", step=sample.step, now=datetime.now(UTC)
    )
    values["sequence"]["name"] = definition.model.name if definition else "Sample"
    values["unsubscribe_url"] = unsubscribe_url(config, lead_id, "email")
    content: object = sample.template
    if sample.channel == "notify":
        content = models.Notify(email=sample.to, template=sample.template)
    templates = catalog.templates
    assert templates is not None
    composed = compose(templates, Go(sample.channel, content, sample.to), values)
    composed = track(config, sample.tracking, composed, step_run_id=step_run_id, lead_id=lead_id)
    message = email_message(config, composed, reference=step_run_id, lead_id=lead_id)
    result: SendResult = sender.send(message)
    assert result.provider_message_id == f"<{step_run_id}@acme.example>"
    return step_run_id


@pytest.fixture
def spamassassin() -> str:
    found = shutil.which("spamassassin")
    if found is None:
        pytest.skip("spamassassin not installed: run scripts/install-test-servers")
    return found


@pytest.fixture
def sink() -> Iterator[tuple[RawSink, int]]:
    found = RawSink()
    with smtp_server(found) as port:
        yield found, port


def dkim_key(folder: Path) -> Path:
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    return key


def scores(spamassassin: str, messages: list[bytes], folder: Path) -> dict[str, tuple[float, str]]:
    """(score, rules hit) by step run: one SpamAssassin run over an mbox, local rules only, no
    Bayes, nothing learnt, nothing written outside `folder`. (SpamAssassin hands an mbox back
    in its own order: match messages by their X-Nurture-Step-Run, never by position.)"""
    box = folder / "samples.mbox"
    with box.open("wb") as out:
        for raw in messages:
            out.write(b"From nurture@acme.example Mon Nov 23 10:00:00 2026\n")
            body = raw.replace(b"\r\n", b"\n")
            out.write(re.sub(rb"(?m)^(>*From )", rb">\1", body).rstrip(b"\n") + b"\n\n")
    done = subprocess.run(
        [spamassassin, "--local", "--mbox", "-p", str(folder / "user_prefs"),
         "--cf=use_bayes 0", "--cf=bayes_auto_learn 0", "--cf=use_auto_whitelist 0"],
        stdin=box.open("rb"), capture_output=True, check=True, timeout=240,
        env={**os.environ, "HOME": str(folder)},
    )  # fmt: skip
    checked = folder / "checked.mbox"
    checked.write_bytes(done.stdout)
    found = {}
    for message in mailbox.mbox(checked):
        status = " ".join(str(message["X-Spam-Status"]).split())
        match = re.search(r"score=(-?[\d.]+).*?tests=(.*?)\s*(?:autolearn=|version=|$)", status)
        assert match is not None, status
        run = str(message["X-Nurture-Step-Run"])
        found[run] = (float(match.group(1)), match.group(2).replace(" ", ""))
    return found


def test_every_sample_email_scores_under_three(
    spamassassin: str, sink: tuple[RawSink, int], tmp_path: Path
) -> None:
    received, port = sink
    config = Settings(
        home=tmp_path / ".nurture",
        sequences_dir=ROOT / "sequences",
        templates_dir=ROOT / "templates",
        public_url="https://nurture.acme.example",
        secret_key="spam-test-secret",
        email_backend="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        email_from="Acme <hello@acme.example>",
        dkim_domain="acme.example",
        dkim_selector="nurture",
        dkim_private_key=str(dkim_key(tmp_path)),
    )
    catalog = load(config)
    found = samples(catalog)
    assert len(found) >= 20  # every sample template, not a lucky few
    sender = SmtpSender.from_settings(config)
    sent = [send_sample(config, catalog, sample, sender) for sample in found]
    sender.close()
    by_run = {str(a.message["X-Nurture-Step-Run"]): a.raw for a in received.arrived}
    assert sorted(by_run) == sorted(sent)

    checked = scores(spamassassin, [by_run[run] for run in sent], tmp_path)
    assert sorted(checked) == sorted(sent)
    results = [checked[run] for run in sent]
    report = [
        f"{score:5.1f}  {sample.template:<28} {sample.channel:<7} {rules}"
        for sample, (score, rules) in zip(found, results, strict=True)
    ]
    print("\nSpamAssassin (local rules) per sample email:\n" + "\n".join(report))
    too_high = [
        line for line, (score, _) in zip(report, results, strict=True) if score >= THRESHOLD
    ]
    assert too_high == [], "\n".join(too_high)
