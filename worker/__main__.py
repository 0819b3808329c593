"""`python -m worker` is `nurture`."""

from worker.cli.main import app

app()
