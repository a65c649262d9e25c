"""Shared pytest configuration."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "lossforge",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("lossforge")
