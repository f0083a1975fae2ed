"""Shared fixtures: no TARSGUARD_* variables from the developer's environment; scripted servers on demand."""

from tests.support.fixtures import clean_env, serve

__all__ = ["clean_env", "serve"]
