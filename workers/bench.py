"""The no-op job of the benchmark's bare-RQ baseline."""

from __future__ import annotations


def noop(instance: str, account: str, at: float | None = None) -> str:
    """Does nothing, with the same arguments as run_check."""
    return "ok"
