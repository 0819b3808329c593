"""The pages people reach from a message: unsubscribe (RFC 8058), the open pixel and the click
redirect — over HTTP, on SQLite and PostgreSQL. Forged links get a 404 and write nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.helpers import make_runtime
from tests.library import WELCOME, welcome_project
from worker.api import public
from worker.api.app import create_app
from worker.definitions.models import Tracking
from worker.kit.signing import sign, unsubscribe_url
from worker.rendering.templates import RenderedEmail
from worker.runtime.process import Runtime
from worker.sending import tracking
from worker.sending.compose import Composed
from worker.sending.service import send_step
from worker.store.db import transaction
from worker.store.steps import claim_due

pytestmark = pytest.mark.integration

TEMPLATE = """---
subject: "Hello {{ lead.first_name | default('there') }}"
---
<html><body><p><a href="https://example.com/pricing?plan=pro&amp;ref=mail">Pricing</a></p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>
"""
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    found = make_runtime(
        tmp_path,
        database_url,
        welcome_project(WELCOME, TEMPLATE),
    )
    found.config = found.config.model_copy(update={"api_tokens": TOKEN})
    return found


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(lambda: runtime)
    app.include_router(public.router)
    with TestClient(app) as test_client:
        yield test_client


def signed_up(client: TestClient, email: str = "ana@example.com") -> str:
    event = {"type": "signed_up", "lead": {"email": email, "first_name": "Ana"}}
    response = client.post("/v1/events", json=event, headers=AUTH)
    assert response.status_code == 202
    return str(response.json()["lead_id"])


def send_due(runtime: Runtime, now: datetime | None = None) -> dict[str, str]:
    """Lease what is due and send it, as the dispatcher and a worker would."""
    moment = now or datetime.now(UTC)
    with transaction(runtime.database) as session:
        leased = claim_due(session, moment, 100)
    return {step: send_step(runtime, step, lambda: moment) for step in leased}


def scalar(runtime: Runtime, sql: str, **params: Any) -> Any:
    with runtime.database.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def events_of(runtime: Runtime, kind: str) -> list[dict[str, Any]]:
    with runtime.database.connect() as connection:
        rows = connection.execute(
            text("SELECT properties FROM events WHERE type = :t"), {"t": kind}
        ).all()
    return [p if isinstance(p, dict) else json.loads(p) for (p,) in rows]


def suppressions(runtime: Runtime, lead_id: str) -> dict[str, str]:
    found = scalar(runtime, "SELECT suppressions FROM leads WHERE id = :id", id=lead_id)
    return found if isinstance(found, dict) else json.loads(found)


def path_of(url: str) -> str:
    return urlsplit(url).path


def tampered(token: str, **changes: str) -> str:
    """The token with its payload changed and its old signature kept."""
    body, _, mac = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + mac


# -- unsubscribe ----------------------------------------------------------------------------------


def test_get_shows_a_page_and_one_click_post_unsubscribes_once(
    client: TestClient, runtime: Runtime
) -> None:
    lead_id = signed_up(client)
    url = unsubscribe_url(runtime.config, lead_id, "email")
    shown = client.get(path_of(url))
    assert shown.status_code == 200
    assert shown.headers["content-type"].startswith("text/html")
    assert "Unsubscribe from our emails?" in shown.text
    assert '<form method="post">' in shown.text
    assert 'value="unsubscribe"' in shown.text
    assert "a•••@example.com" in shown.text  # recognisable, not readable from a forwarded link
    assert shown.headers["referrer-policy"] == "no-referrer"
    assert suppressions(runtime, lead_id) == {}  # a link scanner's GET changes nothing
    assert events_of(runtime, "unsubscribed") == []

    one_click = client.post(path_of(url), data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    assert "You're unsubscribed" in one_click.text
    assert "Resubscribe" in one_click.text
    assert suppressions(runtime, lead_id) == {"email": "link"}
    again = client.post(path_of(url), data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert events_of(runtime, "unsubscribed") == [{"channel": "email", "reason": "link"}]

    # the welcome email was due: the check at send time now stops it
    assert list(send_due(runtime).values()) == ["skipped (suppressed)"]


def test_a_multipart_one_click_body_unsubscribes(client: TestClient, runtime: Runtime) -> None:
    lead_id = signed_up(client)
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n--xyz--\r\n"
    )
    response = client.post(
        path_of(unsubscribe_url(runtime.config, lead_id, "email")),
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 200
    assert suppressions(runtime, lead_id) == {"email": "link"}


def test_resubscribe_and_a_later_change_of_mind(client: TestClient, runtime: Runtime) -> None:
    lead_id = signed_up(client)
    path = path_of(unsubscribe_url(runtime.config, lead_id, "email"))
    client.post(path, data={"action": "unsubscribe"})
    back = client.post(path, data={"action": "resubscribe"})
    assert back.status_code == 200
    assert "You're subscribed again" in back.text
    assert suppressions(runtime, lead_id) == {}
    client.post(path, data={"action": "resubscribe"})  # a second press changes nothing
    assert len(events_of(runtime, "resubscribed")) == 1
    client.post(path, data={"action": "unsubscribe"})  # the same link works again later
    assert suppressions(runtime, lead_id) == {"email": "link"}
    assert len(events_of(runtime, "unsubscribed")) == 2
    assert "You're unsubscribed" in client.get(path).text


def test_a_bounce_is_not_lifted_from_the_page(client: TestClient, runtime: Runtime) -> None:
    lead_id = signed_up(client)
    bounce = {"type": "email_bounced", "lead": {"email": "ana@example.com"}}
    assert client.post("/v1/events", json=bounce, headers=AUTH).status_code == 202
    path = path_of(unsubscribe_url(runtime.config, lead_id, "email"))
    shown = client.get(path)
    assert "could not be delivered" in shown.text
    assert "Resubscribe" not in shown.text
    client.post(path, data={"action": "resubscribe"})
    assert suppressions(runtime, lead_id) == {"email": "bounced"}


def test_forged_tokens_get_a_404_page_and_write_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    lead_id = signed_up(client)
    genuine = unsubscribe_url(runtime.config, lead_id, "email").rsplit("/", 1)[1]
    other_lead = signed_up(client, "bo@example.com")
    forged = [
        "nonsense",
        genuine + "x",
        tampered(genuine, l=other_lead),  # another person's id under the old signature
        sign(runtime.config, {"l": "no-such-lead", "c": "email"}),
        sign(runtime.config, {"l": lead_id, "c": "pigeon"}),
        sign(runtime.config, {"k": "c", "r": "x", "l": lead_id, "u": "https://example.com"}),
    ]
    before = scalar(runtime, "SELECT count(*) FROM events")
    for token in forged:
        for response in (client.get(f"/u/{token}"), client.post(f"/u/{token}", data={})):
            assert response.status_code == 404, token
            assert response.headers["content-type"].startswith("text/html")
            assert "This link does not work" in response.text
    assert scalar(runtime, "SELECT count(*) FROM events") == before
    assert suppressions(runtime, lead_id) == suppressions(runtime, other_lead) == {}


# -- open pixel and click redirect --------------------------------------------------------------


@pytest.fixture
def sent(client: TestClient, runtime: Runtime) -> tuple[str, str]:
    """(lead id, step run id) of a welcome email sent to the outbox."""
    lead_id = signed_up(client)
    [(step_run, outcome)] = send_due(runtime).items()
    assert outcome == "sent"
    return lead_id, step_run


def test_the_pixel_is_a_gif_and_counts_one_open_per_message(
    client: TestClient, runtime: Runtime, sent: tuple[str, str]
) -> None:
    lead_id, step_run = sent
    path = path_of(tracking.open_url(runtime.config, step_run, lead_id))
    assert path.endswith(".gif")
    for _ in range(3):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.content == public.PIXEL
        assert "no-store" in response.headers["cache-control"]
    assert events_of(runtime, "email_opened") == [
        {"sequence": "welcome", "step": "hello", "step_run": step_run}
    ]
    token = path.removeprefix("/t/o/").removesuffix(".gif")
    assert client.get(f"/t/o/{tampered(token, r='other')}.gif").status_code == 404
    assert client.get(f"/t/o/{token}x.gif").status_code == 404
    assert len(events_of(runtime, "email_opened")) == 1


def test_a_click_redirects_only_to_the_signed_url(
    client: TestClient, runtime: Runtime, sent: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lead_id, step_run = sent
    monkeypatch.setattr(public, "utcnow", lambda: datetime(2026, 11, 22, 10, 0, 30, tzinfo=UTC))
    target = "https://example.com/pricing?plan=pro&ref=mail"
    path = path_of(tracking.click_url(runtime.config, step_run, lead_id, target))
    first = client.get(path, follow_redirects=False)
    assert first.status_code == 302
    assert first.headers["location"] == target
    client.get(path, follow_redirects=False)  # a scanner fetching it again within the minute
    [clicked] = events_of(runtime, "email_clicked")
    assert clicked == {"sequence": "welcome", "step": "hello", "step_run": step_run, "url": target}

    token = path.removeprefix("/t/c/")
    evil = tampered(token, u="https://evil.example/phish")
    open_token = tracking.open_url(runtime.config, step_run, lead_id).rsplit("/", 1)[1]
    for bad in (evil, token[:-2], open_token.removesuffix(".gif")):
        response = client.get(f"/t/c/{bad}", follow_redirects=False)
        assert response.status_code == 404
        assert "location" not in response.headers
    assert len(events_of(runtime, "email_clicked")) == 1

    monkeypatch.setattr(public, "utcnow", lambda: datetime(2026, 11, 22, 10, 5, tzinfo=UTC))
    client.get(path, follow_redirects=False)  # a real second click, minutes later
    assert len(events_of(runtime, "email_clicked")) == 2


def test_only_web_links_are_ever_followed(client: TestClient, runtime: Runtime) -> None:
    token = sign(runtime.config, {"k": "c", "r": "x", "l": "y", "u": "javascript:alert(1)"})
    assert client.get(f"/t/c/{token}", follow_redirects=False).status_code == 404


# -- rewriting an email for tracking (pure) -------------------------------------------------------


HTML = (
    "<html><body>"
    '<a href="https://example.com/a?x=1&amp;y=2">A</a>'
    "<a class='b' href='http://example.com/b'>B</a>"
    '<a href="mailto:help@example.com">Mail</a>'
    '<a href="#top">Top</a>'
    '<a href="/relative">Rel</a>'
    '<a href="http://127.0.0.1:8000/u/abc.def">Unsubscribe</a>'
    '<a name="x">no href</a>'
    "</body></html>"
)


def test_rewrite_html_tracks_web_links_only() -> None:
    seen: list[str] = []

    def make(url: str) -> str:
        seen.append(url)
        return f"https://t.example/c?n={len(seen)}&z=1"

    out = tracking.rewrite_html(HTML, make, keep=lambda u: "/u/" in u)
    assert seen == ["https://example.com/a?x=1&y=2", "http://example.com/b"]  # unescaped
    assert '<a href="https://t.example/c?n=1&amp;z=1">A</a>' in out
    assert "<a class='b' href=\"https://t.example/c?n=2&amp;z=1\">B</a>" in out
    for kept in ("mailto:help@example.com", "#top", "/relative", "/u/abc.def", 'name="x"'):
        assert kept in out


def test_add_pixel_goes_before_the_last_body_end() -> None:
    assert tracking.add_pixel("<p>x</p></BODY></html>", "https://t/o.gif").startswith(
        '<p>x</p><img src="https://t/o.gif" width="1" height="1" alt=""'
    )
    assert tracking.add_pixel("<p>x</p>", "https://t/o.gif").endswith('overflow:hidden">')


def _composed(channel: str = "email") -> Composed:
    email = RenderedEmail("S", None, None, None, False, HTML, "text", )  # fmt: skip
    return Composed(channel, subject="S", email=email, to="ana@example.com")


def test_tracking_follows_the_setting_and_the_sequence(runtime: Runtime) -> None:
    config = runtime.config
    both = tracking.track(config, None, _composed(), step_run_id="r1", lead_id="l1")
    assert both.email is not None
    assert both.email.html.count("/t/c/") == 2
    assert "/t/o/" in both.email.html
    assert "http://127.0.0.1:8000/u/abc.def" in both.email.html  # unsubscribe stays direct
    clicks = tracking.track(
        config, Tracking(opens=False), _composed(), step_run_id="r1", lead_id="l1"
    )
    assert clicks.email is not None
    assert "/t/o/" not in clicks.email.html
    off = config.model_copy(update={"tracking": "off"})
    assert tracking.track(off, None, _composed(), step_run_id="r1", lead_id="l1") == _composed()
    notify = _composed("notify")
    assert tracking.track(config, None, notify, step_run_id="r1", lead_id="l1") == notify
    # a link rewritten for tracking still leads where it led
    token = both.email.html.split("/t/c/", 1)[1].split('"', 1)[0]
    data = tracking.read_token(config, token, tracking.CLICK)
    assert data is not None
    assert data["u"] == "https://example.com/a?x=1&y=2"
