"""The one rendering failure: a template that cannot be rendered, with the file:line to fix."""

from __future__ import annotations

from worker.kit.errors import NurtureError
from worker.kit.problems import Problem


class RenderError(NurtureError):
    """A template could not be rendered; `.problem` says where and why."""

    def __init__(self, problem: Problem) -> None:
        # The problem is the only argument so the exception survives pickling (Celery results).
        super().__init__(problem)
        self.problem = problem

    def __str__(self) -> str:
        # Jinja gives no column for most failures, so a render error names the file and line.
        return f"{self.problem.path}:{self.problem.line}: {self.problem.message}"
