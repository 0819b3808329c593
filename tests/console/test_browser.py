"""The console in Debian's Chromium against a real `nurture run` and an SMTP sink: support finds
a lead and pauses it, and the next email waits for the resume; the lead page says in words why
a step is held; a viewer cannot pause, not even by posting directly; a cross-site post changes
nothing; an admin holds every send and releases them. Screenshots of what a person sees."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import PASSWORD, Console, arrivals
from tests.servers.processes import wait_for
from tests.servers.smtp import Sink

pytestmark = pytest.mark.integration


def sign_in(browser: Any, console: Console, name: str, password: str = PASSWORD) -> Any:
    page = browser.new_page()
    page.goto(console.url + "/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return page


def open_lead(page: Any, console: Console, email: str) -> None:
    page.goto(console.url + "/leads")
    page.get_by_label("Search leads").fill(email)
    page.get_by_label("Search leads").press("Enter")
    row = page.get_by_role("row").filter(has_text=email)
    row.get_by_role("link").first.click()
    page.wait_for_load_state()


def form_of(page: Any, button: str) -> Any:
    """The form whose submit button is named `button`."""
    return page.locator("form").filter(has=page.get_by_role("button", name=button, exact=True))


def subjects(sink: Sink) -> list[str]:
    with sink.lock:
        return [str(m["Subject"]) for m in sink.messages]


def test_support_pauses_a_lead_and_the_next_email_waits_for_the_resume(
    console: Console, smtp_sink: Sink, browser: Any, screenshots: Path
) -> None:
    console.add_user("sam", "support")
    console.event("signed_up", "ana@example.com")
    first = arrivals(lambda: smtp_sink.messages, 1, 30)
    assert subjects(smtp_sink) == ["Hello Ana"]

    page = sign_in(browser, console, "sam")
    open_lead(page, console, "ana@example.com")
    pause = form_of(page, "Pause")
    pause.get_by_label("Reason").fill("Asked us to wait until Monday")
    pause.get_by_role("button", name="Pause", exact=True).click()
    page.wait_for_load_state()
    paused_at = time.monotonic()
    assert "Asked us to wait until Monday" in page.content()  # the action, with its reason
    page.screenshot(path=str(screenshots / "lead.png"), full_page=True)

    # `tips` was due 15 s after the first email: well past it, nothing more has arrived
    time.sleep(max(0.0, first + 20 - time.monotonic()))
    assert subjects(smtp_sink) == ["Hello Ana"]

    form_of(page, "Resume").get_by_role("button", name="Resume", exact=True).click()
    page.wait_for_load_state()
    resumed = time.monotonic()
    remaining = 15 - (paused_at - first)  # the delay left when it was paused
    second = arrivals(lambda: smtp_sink.messages, 2, remaining + 20)
    assert subjects(smtp_sink) == ["Hello Ana", "Tips"]
    assert second - resumed >= remaining - 2.0  # moved by the time paused, not sent at once


def test_the_lead_page_says_why_a_step_is_held(
    console: Console, smtp_sink: Sink, browser: Any
) -> None:
    console.add_user("vera", "viewer")
    console.event("signed_up", "bo@example.com", "Bo")
    console.event("pricing_page_viewed", "bo@example.com", "Bo")
    arrivals(lambda: smtp_sink.messages, 2, 30)  # the cap lets two a day through
    page = sign_in(browser, console, "vera")
    open_lead(page, console, "bo@example.com")

    def says_held() -> bool:
        page.reload()
        return "frequency cap" in page.inner_text("body")

    wait_for(says_held, 30, "the held step's reason on the lead page")
    text = page.inner_text("body")
    assert re.search(r"held: frequency cap", text), text
    assert len(smtp_sink.messages) == 2


def test_a_viewer_sees_no_pause_and_a_direct_post_is_refused(
    console: Console, smtp_sink: Sink, browser: Any
) -> None:
    console.add_user("vera", "viewer")
    lead = console.event("signed_up", "cy@example.com", "Cy")
    page = sign_in(browser, console, "vera")
    open_lead(page, console, "cy@example.com")
    assert page.get_by_role("button", name="Pause", exact=True).count() == 0
    answer = page.request.post(
        f"{console.url}/leads/{lead}/pause",
        form={"reason": "just trying"},
        headers={"Origin": console.base},
    )
    assert answer.status == 403
    page.reload()
    assert "just trying" not in page.content()
    assert "Paused" not in page.inner_text("body")


def test_a_cross_site_form_post_changes_nothing(
    console: Console, smtp_sink: Sink, browser: Any
) -> None:
    console.add_user("sam", "support")
    lead = console.event("signed_up", "di@example.com", "Di")
    page = sign_in(browser, console, "sam")
    # the session is good, the origin is not
    answer = page.request.post(
        f"{console.url}/leads/{lead}/pause",
        form={"reason": "forged"},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert answer.status == 403
    # a page elsewhere that posts a form to the console, as an attacker's page would
    evil = browser.new_page()
    evil.set_content(
        f'<form method="post" action="{console.url}/leads/{lead}/pause">'
        '<input name="reason" value="forged"><button>go</button></form>'
    )
    with evil.expect_navigation():
        evil.get_by_role("button", name="go").click()
    assert "forged" not in evil.content() or "refused" in evil.content().lower()
    open_lead(page, console, "di@example.com")
    assert "forged" not in page.content()
    wait_for(lambda: len(smtp_sink.messages) >= 1, 30, "the first email: the lead is not paused")


def test_an_admin_holds_every_send_and_releases_them(
    console: Console, smtp_sink: Sink, browser: Any, screenshots: Path
) -> None:
    console.add_user("ada", "admin")
    login = browser.new_page()
    login.goto(console.url + "/login")
    login.screenshot(path=str(screenshots / "sign-in.png"))
    login.close()
    page = sign_in(browser, console, "ada")
    page.goto(console.url + "/operations")
    hold = form_of(page, "Hold all sends")
    hold.get_by_label("Reason").fill("Incident: wrong prices in the offer")
    hold.get_by_role("checkbox").check()
    hold.get_by_role("button", name="Hold all sends").click()
    page.wait_for_load_state()
    assert "Incident: wrong prices in the offer" in page.inner_text("body")
    page.screenshot(path=str(screenshots / "operations.png"), full_page=True)

    console.event("signed_up", "ed@example.com", "Ed")
    time.sleep(6)  # several dispatch rounds: nothing may go out while held
    assert smtp_sink.messages == []

    release = form_of(page, "Release sends")
    if release.get_by_label("Reason").count():
        release.get_by_label("Reason").fill("Prices fixed")
    release.get_by_role("button", name="Release sends").click()
    page.wait_for_load_state()
    arrivals(lambda: smtp_sink.messages, 1, 30)
    assert subjects(smtp_sink) == ["Hello Ed"]


def test_the_first_run_admin_signs_in_with_the_printed_password_and_must_change_it(
    console: Console, browser: Any
) -> None:
    found = re.search(r"one-time password:? (\S+)", console.cluster.log("run"))
    assert found, console.cluster.log("run")
    page = sign_in(browser, console, "admin", found.group(1))
    assert "/console/password" in page.url
    page.get_by_label("New password", exact=True).fill("a much better password")
    page.get_by_label("Repeat the new password").fill("a much better password")
    page.get_by_role("button", name="Change password").click()
    page.wait_for_load_state()
    assert "/console/password" not in page.url
    again = sign_in(browser, console, "admin", found.group(1))  # the one-time one is spent
    assert "Wrong name or password" in again.inner_text("body")
