"""Calls to providers, timed and counted (`nurture_provider_request_duration_seconds`,
`nurture_provider_throttled_total`, `nurture_provider_errors_total`): the sending path and the
CRM pusher wrap each call in `provider_call`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from integrations.ports import CredentialsRefused, DeliveryUncertain, RateLimited
from worker.kit import metrics


def failure_kind(error: BaseException, provider: str = "") -> str:
    """`throttled` for a 429, else the kind of error: timeout, connection, http_4xx,
    http_5xx, refused (our credentials, a 401/403; an SMTP relay's 5xx) or other."""
    if isinstance(error, CredentialsRefused):
        return "refused"
    if isinstance(error, RateLimited):
        return "throttled"
    causes = [each for each in (error, error.__cause__, error.__context__) if each is not None]
    if isinstance(error, DeliveryUncertain) or any(map(_timeout, causes)):
        return "timeout"
    code = str(getattr(error, "code", "") or "")
    if code == "connection" or any(isinstance(each, ConnectionError) for each in causes):
        return "connection"
    if len(code) == 3 and code[0] in "45" and code.isdigit():
        if provider == "smtp":  # reply codes, not HTTP: a 5xx refuses the message
            return "refused" if code[0] == "5" else "other"
        return f"http_{code[0]}xx"
    return "other"


def _timeout(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or "Timeout" in type(error).__name__


@contextmanager
def provider_call(provider: str) -> Iterator[None]:
    """Time one call to `provider` and count how it failed, if it did; the error goes on."""
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        metrics.count_call(provider, time.perf_counter() - started, failure_kind(exc, provider))
        raise
    metrics.count_call(provider, time.perf_counter() - started)
