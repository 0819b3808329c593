"""One thing wrong at file:line:column: what `nurture validate` prints, what a RenderError holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one file, at a 1-based line and column."""

    path: Path
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"

    def __lt__(self, other: Problem) -> bool:
        # By the path as printed, not by Path's part-wise order: `a-b.yaml` lists before `a/…`.
        return self._order() < other._order()

    def _order(self) -> tuple[str, int, int, str]:
        return str(self.path), self.line, self.column, self.message
