"""Fuzz the whole API from its own OpenAPI document: no 5xx, and every response matches it.

The app is built at import (schemathesis 4's lazy fixtures do not run on pytest 9), on a fresh
SQLite database in a temporary folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from tests.helpers import make_runtime
from tests.library import unsubscribe_template
from worker.api.app import create_app

pytestmark = pytest.mark.integration

SEQUENCE = "name: Trial\nenroll: {on: trial_started}\nsteps:\n  - {id: a, day: 1, email: t/a}\n"
TOKEN = "fuzz-token"
FOLDER = Path(tempfile.mkdtemp(prefix="nurture-fuzz-"))
RUNTIME = make_runtime(
    FOLDER,
    f"sqlite:///{FOLDER / 'n.db'}",
    {"sequences/trial.yaml": SEQUENCE, "templates/t/a.html.j2": unsubscribe_template("Hi")},
)
RUNTIME.config = RUNTIME.config.model_copy(update={"api_tokens": TOKEN})
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(lambda: RUNTIME))


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_contract(case: schemathesis.Case[Any]) -> None:
    # no 5xx, documented status codes, responses and content types that match the document.
    # Not checked: "schema-valid data is accepted" (JSON Schema cannot say a phone number must
    # exist or a time zone be real: those are rightly 422) and "schema-violating data is
    # refused" (an object in the query string serializes into ordinary valid parameters)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )
