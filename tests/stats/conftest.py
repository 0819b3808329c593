"""The operator scenario's fixtures (tests/stats/test_operator.py), shared with the counters'
tests."""

from tests.stats.test_operator import client, runtime, scenario  # noqa: F401
