"""How worker.inbox.classify does on a collection of labelled messages (tests/inbox/corpus.py):
the counts tests/inbox/test_bounce_corpus.py asserts on and bench/bounces.py prints."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.inbox.corpus import Expected, Sample
from worker.inbox.classify import Inbound, Kind, classify

FAILURE_KINDS = (Kind.BOUNCE, Kind.DELAYED)
REPORT_KINDS = (Kind.BOUNCE, Kind.DELAYED, Kind.COMPLAINT)


@dataclass
class Score:
    messages: int = 0
    failures: int = 0
    """Delivery failures, permanent and temporary."""
    recognised: int = 0
    """… taken as a failure (bounce or delayed), with the right address when one is named."""
    named: int = 0
    """Failures whose collection names the failed address."""
    named_right: int = 0
    """… taken as a failure with every named address among the recipients."""
    permanent: int = 0
    permanent_kept: int = 0
    """Permanent failures taken as a bounce (the address is suppressed)."""
    temporary: int = 0
    temporary_kept: int = 0
    """Temporary failures taken as delayed (nothing suppressed)."""
    temporary_suppressing: int = 0
    """Temporary failures taken as a bounce: must be 0."""
    complaints: int = 0
    complaints_recognised: int = 0
    reports_as_reply: int = 0
    """Failures and complaints taken as a person's reply: must be 0."""
    others: int = 0
    others_as_reports: int = 0
    """Replies and auto-replies taken as a failure or a complaint: must be 0."""
    misses: list[tuple[Sample, Inbound]] = field(default_factory=list)

    def add(self, sample: Sample, found: Inbound) -> None:
        self.messages += 1
        right = True
        if sample.expected in (Expected.PERMANENT, Expected.TEMPORARY):
            right = self._failure(sample, found)
        elif sample.expected is Expected.COMPLAINT:
            self.complaints += 1
            right = found.kind is Kind.COMPLAINT
            self.complaints_recognised += right
            self.reports_as_reply += found.kind is Kind.REPLY
        else:
            self.others += 1
            right = found.kind not in REPORT_KINDS
            self.others_as_reports += not right
        if not right:
            self.misses.append((sample, found))

    def _failure(self, sample: Sample, found: Inbound) -> bool:
        self.failures += 1
        taken = found.kind in FAILURE_KINDS
        address_right = sample.addresses <= set(found.recipients)
        if sample.addresses:
            self.named += 1
            self.named_right += taken and address_right
        self.recognised += taken and address_right
        self.reports_as_reply += found.kind is Kind.REPLY
        if sample.expected is Expected.PERMANENT:
            self.permanent += 1
            self.permanent_kept += found.kind is Kind.BOUNCE
            return found.kind is Kind.BOUNCE and address_right
        self.temporary += 1
        self.temporary_kept += found.kind is Kind.DELAYED
        self.temporary_suppressing += found.kind is Kind.BOUNCE
        return found.kind is Kind.DELAYED and address_right

    def merge(self, other: Score) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


def score(samples: Iterable[Sample]) -> Score:
    result = Score()
    for sample in samples:
        result.add(sample, classify(sample.raw))
    return result


def rate(part: int, whole: int) -> float:
    return part / whole if whole else 1.0
