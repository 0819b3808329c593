"""The providers' contract mocks: Prism serving Twilio's and HubSpot's own OpenAPI documents.

The script and the documents live in the workplace's `shared/` folder beside the clone (CI has
it), never in this project. `NURTURE_SHARED_DIR` points elsewhere; without either the tests
that need the mocks skip and say why. Prism itself comes from npm on first use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ProviderMocks:
    twilio_url: str
    hubspot_url: str
    state: Path

    def log(self, provider: str) -> str:
        """What Prism printed for one provider; it marks a broken request with `✖`."""
        return (self.state / f"{provider}.log").read_text(errors="replace")


def script() -> Path | None:
    candidates = [os.environ.get("NURTURE_SHARED_DIR"), str(ROOT.parent / "shared")]
    for folder in filter(None, candidates):
        path = Path(folder) / "tools" / "provider-mocks"
        if path.is_file():
            return path
    return None


@contextmanager
def provider_mocks() -> Iterator[ProviderMocks]:
    path = script()
    if path is None:
        pytest.skip(
            "provider contract mocks not found: they live in ../shared/tools/provider-mocks "
            "beside the clone (set NURTURE_SHARED_DIR to the folder that holds tools/)"
        )
    if shutil.which("npm") is None:
        pytest.skip("provider contract mocks need node and npm: run scripts/install-test-servers")
    state = Path(tempfile.mkdtemp(prefix="nurture-mocks-"))
    environment = {**os.environ, "PROVIDER_MOCKS_STATE": str(state)}
    for name in ("TWILIO_EDGE", "TWILIO_REGION"):
        environment.pop(name, None)
    twilio_port, hubspot_port = free_port(), free_port()
    subprocess.run(
        [str(path), "start", str(twilio_port), str(hubspot_port)],
        env=environment, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    try:
        yield ProviderMocks(
            twilio_url=f"http://127.0.0.1:{twilio_port}",
            hubspot_url=f"http://127.0.0.1:{hubspot_port}",
            state=state,
        )
    finally:
        subprocess.run([str(path), "stop"], env=environment, check=False, timeout=60)
        shutil.rmtree(state, ignore_errors=True)
