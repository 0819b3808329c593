"""Signing in to the console against a real database: the form, the cookie, a wrong password
(the same words for an unknown name; nothing changes but the failure count), the slow-down
after repeated failures, an expired or forged cookie, the one-time password that must be
changed, signing out, and the headers every page carries."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import Session, col

from tests.console.signing_in import (
    PASSWORD,
    browser,
    console_runtime,
    sign_in,
    signed_in,
    text_of,
)
from worker.accounts import sessions
from worker.accounts.roles import Role
from worker.accounts.users import add_user, set_password
from worker.runtime.process import Runtime
from worker.store.tables import SignInFailureRow, UserRow

pytestmark = pytest.mark.integration

HEADERS = {
    "content-security-policy": (
        "default-src 'self'; frame-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    return console_runtime(tmp_path, database_url)


def users(runtime: Runtime) -> list[tuple[str, str, str, bool, int]]:
    with Session(runtime.database) as session:
        rows = session.execute(select(UserRow).order_by(col(UserRow.name))).scalars()
        return [
            (r.name, r.role, r.password_hash, r.must_change_password, r.session_version)
            for r in rows
        ]


def failures(runtime: Runtime) -> dict[str, int]:
    with Session(runtime.database) as session:
        rows = session.execute(select(SignInFailureRow)).scalars()
        return {row.key: row.count for row in rows}


def test_the_sign_in_page_has_labelled_fields_and_the_console_headers(runtime: Runtime) -> None:
    with browser(runtime) as client:
        page = client.get("/console/login")
    assert page.status_code == 200
    html = page.text
    assert '<label for="name">Name</label>' in html
    assert '<input id="name" name="name"' in html
    assert '<label for="password">Password</label>' in html
    assert '<input id="password" name="password" type="password"' in html
    assert '<button type="submit">Sign in</button>' in html
    assert {k: page.headers[k] for k in HEADERS} == HEADERS
    assert "http" not in html.replace('href="/console', "").split("<main>")[0]  # nothing external


def test_a_person_signs_in_with_a_session_cookie_and_lands_where_they_were_going(
    runtime: Runtime,
) -> None:
    with browser(runtime) as client:
        away = client.get("/console/operations")
        assert (away.status_code, away.headers["location"]) == (
            303,
            "/console/login?next=%2Fconsole%2Foperations",
        )
        answer = sign_in(client, "Ada", next="/console/operations")  # names ignore case
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/operations")
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("nurture_session=")
        for part in ("HttpOnly", "Max-Age=43200", "Path=/console", "SameSite=lax"):
            assert part in cookie
        assert "Secure" not in cookie  # the public URL is http
        page = client.get("/console/operations")
        assert page.status_code == 200
        assert "ada (admin)" in text_of(page)
        assert "Sign out" in page.text
        assert "nurture_session=" in page.headers["set-cookie"]  # renewed: 12 h from now


def test_the_cookie_is_secure_behind_an_https_public_url(runtime: Runtime) -> None:
    runtime.config = runtime.config.model_copy(update={"public_url": "https://nurture.example"})
    with browser(runtime) as client:
        answer = sign_in(client, "ada")
    assert "; Secure" in answer.headers["set-cookie"]


def test_sign_in_goes_nowhere_but_the_console(runtime: Runtime) -> None:
    with browser(runtime) as client:
        for target in ("https://evil.example/", "//evil.example/console", "/v1/leads"):
            answer = sign_in(client, "ada", next=target)
            assert answer.headers["location"] == "/console", target


def test_a_wrong_password_or_an_unknown_name_is_refused_alike_and_changes_nothing_else(
    runtime: Runtime,
) -> None:
    before = users(runtime)
    with browser(runtime) as client:
        wrong = sign_in(client, "ada", "not the password")
        nobody = sign_in(client, "nobody", PASSWORD)
        assert client.get("/console/operations").status_code == 303  # not signed in
    for answer in (wrong, nobody):
        assert answer.status_code == 401
        assert "Wrong name or password" in text_of(answer)
        assert "set-cookie" not in answer.headers
    assert users(runtime) == before
    assert failures(runtime) == {"name:ada": 1, "name:nobody": 1, "ip:testclient": 2}


def test_five_failures_slow_sign_in_down_even_with_the_right_password(runtime: Runtime) -> None:
    with browser(runtime) as client:
        for _ in range(5):
            assert sign_in(client, "sam", "guess guess guess").status_code == 401
        held = sign_in(client, "sam")
        assert held.status_code == 429
        assert "Too many failed sign-ins; try again in 1 minute" in text_of(held)
        assert "set-cookie" not in held.headers
        # another process sees the same count: the lock is a row, not memory
        with Session(runtime.database) as session:
            row = session.get(SignInFailureRow, "name:sam")
            assert row is not None
            assert row.locked_until is not None
            row.locked_until = row.locked_until.replace(year=2000)  # the minute has passed
            session.add(row)
            session.commit()
        # the address is held too (five failures from it), so wait that out as well
        with Session(runtime.database) as session:
            row = session.get(SignInFailureRow, "ip:testclient")
            assert row is not None
            assert row.locked_until is not None
            row.locked_until = row.locked_until.replace(year=2000)
            session.add(row)
            session.commit()
        assert sign_in(client, "sam").status_code == 303
    assert "name:sam" not in failures(runtime)  # a right password clears the name's count


def test_an_expired_session_goes_back_to_sign_in_and_says_so(runtime: Runtime) -> None:
    thirteen_hours_ago = time.time() - 13 * 3600
    old = sessions.issue(runtime.config, "ada", 1, clock=lambda: thirteen_hours_ago)
    with browser(runtime) as client:
        client.cookies.set("nurture_session", old, path="/console")
        answer = client.get("/console/operations")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/login?next=")
        assert 'nurture_session=""' in answer.headers["set-cookie"]  # the dead cookie goes
        login = client.get(answer.headers["location"])
        assert "Your session has ended; sign in again" in text_of(login)
        client.cookies.set("nurture_session", old, path="/console")
        posted = client.post(
            "/console/operations/sends/hold", data={"reason": "x", "confirm": "yes"}
        )
        assert posted.status_code == 401
        assert "Your session has ended; sign in again" in text_of(posted)


def test_a_forged_or_foreign_cookie_is_no_session(runtime: Runtime) -> None:
    good = sessions.issue(runtime.config, "vera", 1)
    _body, stamp, mac = good.split(".")
    forged_body = sessions.issue(runtime.config, "ada", 1).split(".")[0]
    foreign = runtime.config.model_copy(
        update={"secret_key": SecretStr("another installation's key")}
    )
    for cookie in (
        f"{forged_body}.{stamp}.{mac}",  # vera's signature on a claim to be ada
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        sessions.issue(foreign, "ada", 1),
        "not a cookie at all",
    ):
        with browser(runtime) as client:
            client.cookies.set("nurture_session", cookie, path="/console")
            answer = client.get("/console/operations")
            assert answer.status_code == 303, cookie
            assert "ended=1" in answer.headers["location"]


def test_a_new_password_or_role_ends_the_sessions_already_open(runtime: Runtime) -> None:
    with signed_in(runtime, "sam") as client:
        assert client.get("/console/operations").status_code == 200
        set_password(runtime.database, "sam", "another long password", must_change_password=False)
        assert client.get("/console/operations").status_code == 303


def test_the_one_time_password_must_be_changed_before_anything_else(runtime: Runtime) -> None:
    add_user(
        runtime.database, "newbie", Role.SUPPORT, "one-time-pass-123", must_change_password=True
    )
    with browser(runtime) as client:
        answer = sign_in(client, "newbie", "one-time-pass-123", next="/console/operations")
        assert answer.headers["location"] == "/console/password"
        detour = client.get("/console/operations")
        assert (detour.status_code, detour.headers["location"]) == (303, "/console/password")
        form = client.get("/console/password")
        assert form.status_code == 200
        for label in ("New password", "Repeat the new password"):
            assert f">{label}</label>" in form.text
        assert "Current password" not in form.text  # the one-time one was just typed
        assert '<button type="submit">Change password</button>' in form.text

        differ = client.post(
            "/console/password",
            data={"new": "a much better password", "repeat": "a much better passwort"},
        )
        assert differ.status_code == 422
        assert "the two new passwords differ" in text_of(differ)
        short = client.post("/console/password", data={"new": "short", "repeat": "short"})
        assert short.status_code == 422
        assert "New password: the password must be at least 10 characters long." in text_of(short)
        same = client.post(
            "/console/password", data={"new": "one-time-pass-123", "repeat": "one-time-pass-123"}
        )
        assert same.status_code == 422

        done = client.post(
            "/console/password",
            data={"new": "a much better password", "repeat": "a much better password"},
        )
        assert (done.status_code, done.headers["location"]) == (303, "/console")
        assert client.get("/console/operations").status_code == 200  # the new cookie is good
    with browser(runtime) as client:
        assert sign_in(client, "newbie", "one-time-pass-123").status_code == 401
        assert sign_in(client, "newbie", "a much better password").headers["location"] == "/console"


def test_changing_ones_own_password_asks_for_the_current_one(runtime: Runtime) -> None:
    with signed_in(runtime, "vera") as client:
        form = client.get("/console/password")
        assert ">Current password</label>" in form.text
        wrong = client.post(
            "/console/password",
            data={
                "current": "nope",
                "new": "a much better password",
                "repeat": "a much better password",
            },
        )
        assert wrong.status_code == 422
        assert "Current password: that is not your current password." in text_of(wrong)
        done = client.post(
            "/console/password",
            data={
                "current": PASSWORD,
                "new": "a much better password",
                "repeat": "a much better password",
            },
        )
        assert done.status_code == 303


def test_signing_out_ends_the_cookie(runtime: Runtime) -> None:
    with signed_in(runtime, "vera") as client:
        out = client.post("/console/logout")
        assert (out.status_code, out.headers["location"]) == (303, "/console/login?signed_out=1")
        assert 'nurture_session=""' in out.headers["set-cookie"]
        assert client.get("/console/operations").status_code == 303
        assert "You are signed out." in text_of(client.get("/console/login?signed_out=1"))


def test_a_cross_site_sign_in_is_refused(runtime: Runtime) -> None:
    with browser(runtime) as client:
        answer = client.post(
            "/console/login",
            data={"name": "ada", "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers
    assert failures(runtime) == {}


def test_a_console_path_that_does_not_exist_answers_404(runtime: Runtime) -> None:
    with signed_in(runtime, "vera") as client:
        assert client.get("/console/nothing-here").status_code == 404
