"""Shared fixtures: real services started once per session (STYLE §8)."""

pytest_plugins = ["tests.fixtures.postgres"]
