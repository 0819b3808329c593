"""The one exception tree: every error Nurture raises on purpose is a `NurtureError`, so a shell
can tell an expected refusal (answered in words) from a bug (logged with its traceback)."""

from __future__ import annotations


class NurtureError(Exception):
    """Something Nurture refuses or cannot do, said in words a person can act on."""


class NotFound(NurtureError, LookupError):
    """A lead, sequence, version or message that does not exist (HTTP 404, CLI exit 1)."""


class InvalidInput(NurtureError, ValueError):
    """Input that names its own mistake: the field, or the file:line (HTTP 422, CLI exit 1)."""


class NotConfigured(NurtureError):
    """A feature whose settings are missing (e.g. no reply mailbox to read)."""


class Conflict(NurtureError):
    """An action the lead's current state refuses, like enrolling it where it is already
    active (HTTP 409)."""
