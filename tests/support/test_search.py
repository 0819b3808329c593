"""The console's "Search leads" on SQLite and PostgreSQL: an exact email (any case), a phone in
any common format (read in the default region), an external id or lead id, and a name by its
start; a blank or one-letter query looks nothing up; the searchable names follow the names
through an update, an erasure and the migration that adds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from pydantic import ValidationError
from sqlalchemy import Engine, create_engine, event, text

from tests.support.lead_project import ANA, lead_runtime, post
from worker.config import Settings
from worker.runtime.process import Runtime
from worker.store.migrate import alembic_config, upgrade
from worker.support.privacy import erase
from worker.support.search import TOO_SHORT, search

pytestmark = pytest.mark.integration

BOB = {"email": "bob@example.com", "first_name": "Bob", "last_name": "Stone"}
ANASTASIA = {"email": "anastasia@example.com", "first_name": "Anastasia", "last_name": "Bloom"}


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Runtime:
    return lead_runtime(tmp_path, database_url)


@pytest.fixture
def ana(runtime: Runtime) -> str:
    lead_id = post(runtime, "trial_started", ANA)
    post(runtime, "signed_up", BOB)
    post(runtime, "signed_up", ANASTASIA)
    return lead_id


def names(runtime: Runtime, query: str) -> list[str | None]:
    return [lead.name for lead in search(runtime, query).leads]


def test_an_email_is_found_whatever_its_case(runtime: Runtime, ana: str) -> None:
    found = search(runtime, "  ANA@Example.COM ")
    assert [lead.id for lead in found.leads] == [ana]
    [lead] = found.leads
    assert (lead.email, lead.phone, lead.external_id) == ("ana@example.com", "+14155550134",
                                                          "crm-42")  # fmt: skip
    assert lead.name == "Ana Lovelace"
    assert lead.active_enrollments == 2  # the trial and the texts
    assert found.message is None


@pytest.mark.parametrize("typed", ["(415) 555-0134", "415.555.0134", "+1 415-555-0134",
                                   "+14155550134"])  # fmt: skip
def test_a_phone_is_found_in_any_common_format(runtime: Runtime, ana: str, typed: str) -> None:
    assert [lead.id for lead in search(runtime, typed).leads] == [ana]


def test_a_phone_without_its_country_code_is_read_in_the_default_region(
    runtime: Runtime,
) -> None:
    berlin = post(runtime, "signed_up", {"phone": "+4915112345678"})
    assert search(runtime, "0151 12345678").leads == []  # a US number by default
    runtime.config = runtime.config.model_copy(update={"default_region": "DE"})
    assert [lead.id for lead in search(runtime, "0151 1234 5678").leads] == [berlin]


def test_the_external_id_and_the_lead_id_are_found_exactly(runtime: Runtime, ana: str) -> None:
    assert [lead.id for lead in search(runtime, "crm-42").leads] == [ana]
    assert search(runtime, "crm-4").leads == []
    assert [lead.id for lead in search(runtime, ana).leads] == [ana]


def test_names_are_found_by_their_start_case_insensitive(runtime: Runtime, ana: str) -> None:
    assert names(runtime, "ana") == ["Ana Lovelace", "Anastasia Bloom"]
    assert names(runtime, "ANA LOV") == ["Ana Lovelace"]
    assert names(runtime, "lovel") == ["Ana Lovelace"]  # the last name alone
    assert names(runtime, "sto") == ["Bob Stone"]
    assert names(runtime, "ovelace") == []  # the middle of a name is not its start


def test_no_results_say_what_was_looked_up(runtime: Runtime, ana: str) -> None:
    found = search(runtime, "zed@example.com")
    assert found.leads == []
    assert found.message is None
    assert found.looked_up == ["email", "external_id", "name_prefix"]


def test_a_blank_or_one_letter_query_looks_nothing_up(runtime: Runtime, ana: str) -> None:
    statements: list[str] = []
    engine: Engine = runtime.database

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        for query in ("", "   ", "a", " b "):
            found = search(runtime, query)
            assert (found.leads, found.message) == ([], TOO_SHORT)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements == []


def test_the_names_searched_follow_an_update_and_an_erasure(runtime: Runtime, ana: str) -> None:
    post(runtime, "profile_updated", {"email": "ana@example.com", "last_name": "Byron"})
    assert names(runtime, "byron") == ["Ana Byron"]
    assert names(runtime, "lovelace") == []
    erase(runtime, ana)
    assert names(runtime, "ana") == ["Anastasia Bloom"]
    assert search(runtime, "ana@example.com").leads == []


def test_the_migration_fills_in_the_names_of_leads_already_there(
    tmp_path: Path, database_url: str
) -> None:
    command.upgrade(alembic_config(database_url), "1e_unknown_index")
    before = create_engine(database_url)
    with before.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO leads (id, email, first_name, last_name, attributes, consent, "
                "suppressions, score, history, inactive_notified, erased, created_at, "
                "updated_at) VALUES ('l1', 'old@example.com', 'Zoë', 'de la Cruz', '{}', "
                "'{}', '{}', '{}', '[]', false, false, '2026-01-01 00:00:00', "
                "'2026-01-01 00:00:00')"
            )
        )
    before.dispose()
    upgrade(database_url)
    runtime = lead_runtime(tmp_path, database_url)
    assert names(runtime, "ZOË DE") == ["Zoë de la Cruz"]
    assert names(runtime, "de la") == ["Zoë de la Cruz"]


def test_an_unknown_default_region_stops_the_settings_naming_it() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(default_region="XX")
    assert "default_region" in str(raised.value)
    assert Settings(default_region="gb").default_region == "GB"
