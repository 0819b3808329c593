"""The load of `bench/ingest.py`: the events (signups, pricing views, Shopify checkouts signed as
Shopify signs them), batches posted over a few connections, and single requests from many
concurrent clients on keep-alive connections.

The single-request clients speak HTTP/1.1 over asyncio streams themselves: httpx costs ~0.5 ms
of CPU per request, which on two cores would be taken from the API being measured. A connection
the server closes or resets mid-request is counted as dropped (and reopened for the next).
Not a benchmark itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

BATCH = 1000
TOKEN = "bench-token"
SHOPIFY_SECRET = "shpss_bench"


# -- the events ----------------------------------------------------------------------------------


def signup(key: str) -> dict[str, Any]:
    return {
        "id": f"evt-{key}",
        "type": "trial_started",
        "lead": {"email": f"{key}@example.com", "first_name": "Ana", "timezone": "Europe/Berlin",
                 "attributes": {"plan": "pro"}},
        "properties": {"source": "bench"},
    }  # fmt: skip


def pricing_view(existing: str, key: str) -> dict[str, Any]:
    return {
        "id": f"evt-{key}",
        "type": "pricing_page_viewed",
        "lead": {"email": f"{existing}@example.com"},
        "properties": {"path": "/pricing"},
    }


def mixed_events(count: int, prefix: str, existing: list[str], rng: random.Random) -> list[Any]:
    """Half new signups, half pricing views of existing leads, interleaved."""
    found: list[Any] = []
    for number in range(count):
        key = f"{prefix}-{number}"
        found.append(signup(key) if number % 2 == 0 else pricing_view(rng.choice(existing), key))
    return found


def checkout(key: str) -> dict[str, Any]:
    """A Shopify `checkouts/create` payload of a new shopper (enrolls into the cart sequence)."""
    return {
        "id": _number(key),
        "token": f"tok-{key}",
        "cart_token": f"cart-{key}",
        "email": f"{key}@example.com",
        "created_at": "2026-11-22T10:00:00+00:00",
        "total_price": "49.00",
        "currency": "EUR",
        "buyer_accepts_marketing": True,
        "customer": {"id": _number(f"customer-{key}"), "first_name": "Ana"},
        "line_items": [{"title": "Tea"}],
    }


def _number(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)


# -- raw requests --------------------------------------------------------------------------------


def request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: bench", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def api_requests(events: list[Any], *, early: bool = False) -> list[bytes]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if early:
        headers["Prefer"] = "respond-async"
    return [request("/v1/events", json.dumps(e).encode(), headers) for e in events]


def shopify_requests(keys: list[str]) -> list[bytes]:
    """Signed like Shopify: base64 HMAC-SHA256 of the raw body with the app secret."""
    found = []
    for key in keys:
        body = json.dumps(checkout(key)).encode()
        digest = hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()
        headers = {
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Topic": "checkouts/create",
            "X-Shopify-Webhook-Id": f"wh-{key}",
        }
        found.append(request("/v1/webhooks/shopify", body, headers))
    return found


@dataclass
class Load:
    requests: int
    clients: int
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    cpu: float = 0.0
    """CPU seconds of the load generator itself."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> int:
        return self.dropped + sum(n for s, n in self.statuses.items() if s not in (200, 202))


def blast(host: str, port: int, requests: list[bytes], clients: int) -> Load:
    """Every request, `clients` at a time, each client on its own keep-alive connection."""
    load = Load(len(requests), clients)
    pending = iter(requests)
    cpu = _own_cpu()
    began = time.perf_counter()
    asyncio.run(_clients(host, port, pending, load))
    load.seconds = time.perf_counter() - began
    load.cpu = _own_cpu() - cpu
    return load


async def _clients(host: str, port: int, pending: Iterator[bytes], load: Load) -> None:
    await asyncio.gather(*(_client(host, port, pending, load) for _ in range(load.clients)))


async def _client(host: str, port: int, pending: Iterator[bytes], load: Load) -> None:
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    for payload in pending:
        try:
            if connection is None:
                connection = await asyncio.open_connection(host, port)
            reader, writer = connection
            writer.write(payload)
            await writer.drain()
            load.statuses[await asyncio.wait_for(_answer(reader), 120)] += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            load.dropped += 1
            if connection is not None:
                connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return status


def lone_latencies(host: str, port: int, requests: list[bytes]) -> list[float]:
    """Seconds per request from one client, one at a time: what a lone request waits."""
    return asyncio.run(_lone(host, port, requests))


async def _lone(host: str, port: int, requests: list[bytes]) -> list[float]:
    reader, writer = await asyncio.open_connection(host, port)
    found = []
    try:
        for payload in requests:
            began = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            if await _answer(reader) not in (200, 202):
                raise RuntimeError("a lone request failed")
            found.append(time.perf_counter() - began)
    finally:
        writer.close()
    return found


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


# -- batches -------------------------------------------------------------------------------------


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def post_batches(base: str, events: list[Any], streams: int = 1) -> tuple[float, int]:
    """The batches over `streams` connections at once (each posts its share in order, the next
    as soon as the last is answered); (seconds, items answered with an error)."""
    batches = list(chunks(events, BATCH))
    errors = [0] * streams
    failures: list[str] = []

    def work(number: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=300) as client:  # fmt: skip
            for part in batches[number::streams]:
                response = client.post("/v1/events/batch", json={"events": part})
                if response.status_code != 207:
                    failures.append(f"batch answered {response.status_code}: "
                                    f"{response.text[:500]}")  # fmt: skip
                    return
                errors[number] += sum(1 for r in response.json()["results"] if "error" in r)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(streams)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(failures[0])
    return time.perf_counter() - began, sum(errors)
