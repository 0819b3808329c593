"""`python -m worker` is `nurture`."""

from worker.cli import app

app()
