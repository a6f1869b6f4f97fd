"""Helpers for the processes' ``main()``: settings errors as clear messages, config errors likewise."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from shared.config import ConfigError

S = TypeVar("S")

EXIT_USAGE = 2
EXIT_CONFIG = 1


def settings_or_exit(factory: Callable[[], S]) -> S:
    """Build a settings object; on a bad variable, name it with the reason and exit 2."""
    try:
        return factory()
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            sys.stderr.write(f"invalid setting {name}: {err['msg']}\n")
        raise SystemExit(EXIT_USAGE) from None


def config_or_exit(factory: Callable[[], S]) -> S:
    """Load a configuration; on errors, list every problem (file: path: reason) and exit 1."""
    try:
        return factory()
    except ConfigError as exc:
        sys.stderr.write(f"invalid configuration {exc.file}:\n")
        for problem in exc.problems:
            sys.stderr.write(f"  {problem.render(exc.file)}\n")
        raise SystemExit(EXIT_CONFIG) from None


def config_path(given: Path | None) -> Path | None:
    """The configuration a command runs: ``given``, else ``$MONITORX_CONFIG``, else None (the
    built-in one)."""
    env = os.environ.get("MONITORX_CONFIG")
    return given or (Path(env) if env else None)


def instant(text: str) -> float:
    """A time option (argparse ``type``): ISO 8601 (UTC when no offset is given) or unix seconds.
    Returns unix seconds; anything else, and a number that is not finite, is an ArgumentTypeError."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise argparse.ArgumentTypeError(f"not a finite number of unix seconds: {text!r}")
        return seconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time or unix seconds: {text!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
