"""What every `nurture` command shares: the two consoles, failing with a message and exit code,
finding and loading the sequence files, building the runtime, reading a JSON file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

from worker.config import settings
from worker.definitions.catalog import Catalog, load_catalog

if TYPE_CHECKING:
    from worker.runtime.process import CatalogError, Runtime

# piped or captured output is not a terminal: give tables room instead of wrapping at 80
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(message, markup=False)
    raise typer.Exit(code)


def folders(directory: Path | None) -> tuple[Path, Path]:
    """A project folder holds sequences/ and templates/; a sequences folder works too."""
    config = settings()
    if directory is None:
        return config.sequences_dir, config.templates_dir
    if (directory / "sequences").is_dir():
        return directory / "sequences", directory / "templates"
    return directory, directory.parent / "templates"


def load(directory: Path | None = None) -> Catalog:
    """The catalog, or every problem printed and exit 1."""
    sequences_dir, templates_dir = folders(directory)
    catalog, problems = load_catalog(sequences_dir, templates_dir)
    if problems:
        for problem in problems:
            err.print(str(problem), markup=False)
        fail(f"{len(problems)} problem(s): nothing was changed")
    return catalog


def runtime() -> Runtime:
    """The runtime of the commands that touch the database, or the catalog's problems and exit 1."""
    # imported here: the authoring commands run without the database and its drivers
    from worker.runtime.process import CatalogError, build

    try:
        return build()
    except CatalogError as exc:
        catalog_failed(exc)


def catalog_failed(exc: CatalogError) -> NoReturn:
    for problem in exc.problems:
        err.print(str(problem), markup=False)
    fail(f"{len(exc.problems)} problem(s) in the sequence files: fix them first")


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}")
