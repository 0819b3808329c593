"""What the deploy files say, read the way Docker and Prometheus read them: docker-compose.yml
(ruamel.yaml, merge keys resolved), the Dockerfile's ENV/WORKDIR/USER/COPY lines, and the
metric names the alert rules and the Grafana dashboard reference."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "nurture.json"

NAME = re.compile(r"\b(nurture_[a-z0-9_]+)\b")
LABEL_TEMPLATE = re.compile(r"\{\{.*?\}\}")


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def compose() -> dict[str, Any]:
    found: dict[str, Any] = load_yaml(COMPOSE)
    return found


@dataclass(frozen=True)
class Image:
    """The lines of the Dockerfile a container's start depends on."""

    workdir: str
    user: str
    env: dict[str, str]
    copies: list[tuple[str, str]] = field(default_factory=list)
    """(source in the checkout, destination under workdir)"""


def image() -> Image:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    workdir, user, env, copies = "/", "root", {}, []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        instruction, arguments = words[0].upper(), words[1:]
        if instruction == "WORKDIR":
            workdir = arguments[0]
        elif instruction == "USER":
            user = arguments[0]
        elif instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in arguments))
        elif instruction == "COPY":
            *sources, target = arguments
            copies += [(source, target) for source in sources]
    return Image(workdir, user, env, copies)


def rule_expressions() -> dict[str, str]:
    """Alert name → its PromQL."""
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> list[str]:
        found = []
        for panel in panels:
            found += [target["expr"] for target in panel.get("targets", [])]
            found += walk(panel.get("panels", []))
        return found

    return walk(json.loads(DASHBOARD.read_text())["panels"])


def referenced_names() -> dict[str, set[str]]:
    """Every `nurture_…` name the rules and the dashboard use → where (alert or panel)."""
    where: dict[str, set[str]] = {}
    sources = [(f"alert {name}", expr) for name, expr in rule_expressions().items()]
    sources += [("dashboard", expr) for expr in dashboard_expressions()]
    for source, expr in sources:
        for name in NAME.findall(LABEL_TEMPLATE.sub("", expr)):
            where.setdefault(name, set()).add(source)
    return where


def scraped_names(text: str) -> set[str]:
    """The sample names in a Prometheus text page, and the families it declares (a labelled
    metric with nothing observed yet has `# TYPE` and no sample: its series names count)."""
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            suffixes = {
                "counter": ["_total", "_created"],
                "histogram": ["_bucket", "_sum", "_count", "_created"],
                "summary": ["_sum", "_count", "_created"],
            }.get(kind, [""])
            base = name.removesuffix("_total") if kind == "counter" else name
            found |= {base + suffix for suffix in suffixes} | {name}
        elif line and not line.startswith("#"):
            found.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return found
