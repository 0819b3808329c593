"""Finding a lead from the console's one field, "Search leads": an exact email (as stored,
in lower case), a phone number in any common form (normalised to E.164 with the
`default_region` setting), an exact external id or lead id, or the start of a name (first
name, last name, or "first last"), case-insensitive.

Every lookup is an index probe or an index range scan of at most LIMIT rows
(worker/store/leads.py), so a search costs the same at a thousand leads as at a million.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import phonenumbers

from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import (
    SearchTerms,
    active_enrollment_counts,
    name_key,
    search_leads,
)
from worker.store.tables import LeadRow

LIMIT = 50
SHORTEST = 2
"""A blank or one-character query is not looked up: it would name half the leads."""
LONGEST = 320
TOO_SHORT = f"Type at least {SHORTEST} characters: an email, a phone number, an id or a name."


@dataclass(frozen=True)
class FoundLead:
    id: str
    email: str | None
    phone: str | None
    name: str | None
    external_id: str | None
    segment: str | None
    active_enrollments: int
    erased: bool = False


@dataclass(frozen=True)
class Search:
    """What a search found, or why nothing was looked up (`message`)."""

    query: str
    leads: list[FoundLead] = field(default_factory=list)
    message: str | None = None
    looked_up: list[str] = field(default_factory=list)
    """The kinds tried, for the page to say what "no results" means: email, phone …"""

    @property
    def more(self) -> bool:
        """The results were cut at LIMIT: a narrower query may find the one meant."""
        return len(self.leads) >= LIMIT


def search(runtime: Runtime, query: str) -> Search:
    """The leads `query` names, exact matches first, then names in alphabetical order."""
    text = " ".join(query.split())[:LONGEST]
    if len(text) < SHORTEST:
        return Search(text, message=TOO_SHORT)
    terms = terms_for(text, runtime.config.default_region)
    with transaction(runtime.database) as session:
        rows = search_leads(session, terms, LIMIT)
        counts = active_enrollment_counts(session, [row.id for row in rows])
    return Search(text, [_found(row, counts.get(row.id, 0)) for row in rows],
                  looked_up=terms.kinds())  # fmt: skip


def terms_for(text: str, region: str) -> SearchTerms:
    """What one query can mean: each kind it could be is looked up."""
    return SearchTerms(
        email=text.lower() if "@" in text else None,
        phone=e164(text, region),
        external_id=text,
        lead_id=text if len(text) == 32 and text.isalnum() else None,
        name_prefix=name_key(text) if any(c.isalpha() for c in text) else None,
    )


def e164(text: str, region: str) -> str | None:
    """`(415) 555-0134`, `415.555.0134`, `+1 415 555 0134` → `+14155550134`; None for what
    cannot be a phone number. A number without a country code is read in `region`."""
    if sum(c.isdigit() for c in text) < 6 or "@" in text:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _found(row: LeadRow, active: int) -> FoundLead:
    name = " ".join(part for part in (row.first_name, row.last_name) if part) or None
    return FoundLead(
        id=row.id,
        email=row.email,
        phone=row.phone,
        name=name,
        external_id=row.external_id,
        segment=row.segment,
        active_enrollments=active,
        erased=row.erased,
    )
