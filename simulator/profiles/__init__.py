"""The simulator's schemas: `customers`, `bank`, `retail` (one module each)."""

from __future__ import annotations

import importlib

from tidemark.simulator.errors import SimulatorConfigError
from tidemark.simulator.profiles.base import Profile

PROFILES = ("customers", "bank", "retail")


def get_profile(name: str) -> Profile:
    """The profile called `name`, or a clear error listing the known ones."""
    if name not in PROFILES:
        raise SimulatorConfigError(
            f"unknown profile `{name}`", hint=f"choose one of: {', '.join(PROFILES)}"
        )
    profile: Profile = importlib.import_module(f"tidemark.simulator.profiles.{name}").PROFILE
    return profile
