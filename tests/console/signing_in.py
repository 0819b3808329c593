"""What the console's tests share: an installation with the trial sequence on a real database,
people of each role, and a TestClient signed in as one of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from httpx import Response

from tests.helpers import make_runtime
from tests.library import TRIAL, unsubscribe_template
from worker.accounts.roles import Role
from worker.accounts.users import add_user
from worker.api.app import create_app
from worker.runtime.process import Runtime

PASSWORD = "correct horse battery"
TOKEN = "console-test-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FILES = {
    "sequences/trial.yaml": TRIAL,
    "templates/t/welcome.html.j2": unsubscribe_template("Hi"),
}
PEOPLE = {"vera": Role.VIEWER, "sam": Role.SUPPORT, "mia": Role.MARKETER, "ada": Role.ADMIN}
"""One person per role, each with PASSWORD."""


def console_runtime(folder: Path, database_url: str) -> Runtime:
    """The trial sequence on a migrated database, an API token, and PEOPLE."""
    runtime = make_runtime(folder, database_url, FILES)
    runtime.config = runtime.config.model_copy(update={"api_tokens": TOKEN})
    for name, role in PEOPLE.items():
        add_user(runtime.database, name, role, PASSWORD)
    return runtime


@contextmanager
def browser(runtime: Runtime) -> Iterator[TestClient]:
    """A client that keeps cookies, as a browser does; it follows no redirect by itself."""
    with TestClient(create_app(lambda: runtime), follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, name: str, password: str = PASSWORD, **form: str) -> Response:
    answer: Response = client.post(
        "/console/login", data={"name": name, "password": password, **form}
    )
    return answer


@contextmanager
def signed_in(runtime: Runtime, name: str) -> Iterator[TestClient]:
    """A client signed in as `name` (one of PEOPLE)."""
    with browser(runtime) as client:
        answer = sign_in(client, name)
        assert answer.status_code == 303, answer.text
        yield client


def text_of(answer: Response) -> str:
    """The page's words, without its tags (what a person reads)."""
    import re
    from html import unescape

    words = re.sub(r"<[^>]+>", " ", answer.text)
    return re.sub(r"\s+", " ", unescape(words)).strip()
