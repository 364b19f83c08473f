"""Shared fixtures: real services started once per session (STYLE §8).

One fixtures module per service; each is registered here once.
"""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.debezium",
    "tests.fixtures.kafka",
    "tests.fixtures.connect",
    "tests.fixtures.lake",
    "tests.fixtures.exit",
    "tests.fixtures.markers",
]
