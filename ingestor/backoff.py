"""Reconnect policy of the Galio client: one pure function decides retry or give up, and the delay.

websockets' own ``async for ws in connect(...)`` resets its backoff after every successful
handshake, so a server that accepts and then closes at once is reconnected in a tight loop (see
pitfalls). Here the backoff only resets after a *healthy* session: one that delivered at least
one frame and lasted ``stable_after`` seconds.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from shared.backoff import BackoffPolicy, backoff_delay

LOUD_AFTER = 3
"""Consecutive failures after which even ordinary disconnects are logged at ERROR."""


class SilenceTimeout(Exception):
    """The watchdog fired: connected, but no frame for ``silence_timeout`` seconds."""


@dataclass(frozen=True)
class SessionOutcome:
    """What one connection attempt achieved before it ended."""

    frames: int = 0
    duration: float = 0.0
    """Seconds between the completed handshake and the end (0 when the handshake failed)."""


@dataclass(frozen=True)
class Decision:
    """Retry after ``delay`` seconds (``failures`` is the new consecutive-failure count), or give up."""

    retry: bool
    delay: float
    failures: int
    level: int
    reason: str


def is_healthy(outcome: SessionOutcome, policy: BackoffPolicy) -> bool:
    """A session resets the backoff only when it delivered a frame and lasted ``stable_after``."""
    return outcome.frames > 0 and outcome.duration >= policy.stable_after


def decide(
    exc: BaseException,
    outcome: SessionOutcome,
    failures: int,
    policy: BackoffPolicy,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Every retry-or-give-up decision of the client, for the exception that ended a session.

    ======================================================  ======  ==============================
    error                                                   action  log level
    ======================================================  ======  ==============================
    ``InvalidURI``, ``InvalidProxy``, ``ValueError``        give up ERROR (configuration error)
    ``InvalidStatus`` (HTTP 401, 403, 429, 5xx, any code)   retry   ERROR; 429 honours Retry-After
    other ``InvalidHandshake`` (bad response, proxy, TLS)   retry   ERROR
    ``ConnectionClosed`` (server close, 1009 too big, ...)  retry   WARNING; ERROR if no frame
    ``SilenceTimeout`` (watchdog)                           retry   WARNING
    ``OSError``, ``TimeoutError`` (refused, DNS, TLS)       retry   WARNING
    anything else (a bug)                                   give up ERROR, re-raised
    ======================================================  ======  ==============================

    A retry after a healthy session starts the backoff again (``failures`` becomes 1); otherwise
    ``failures`` grows and so does the delay (see :func:`backoff_delay`). Retried errors become
    ERROR once ``LOUD_AFTER`` attempts in a row failed.
    """
    reason = _describe(exc)
    if not _retryable(exc):  # configuration errors included: none of them is retryable
        return Decision(False, 0.0, failures, logging.ERROR, reason)
    count = 1 if is_healthy(outcome, policy) else failures + 1
    delay = max(backoff_delay(policy, count, rand), _retry_after(exc, policy))
    loud = count >= LOUD_AFTER or isinstance(exc, InvalidHandshake) or _closed_without_frame(exc, outcome)
    return Decision(True, delay, count, logging.ERROR if loud else logging.WARNING, reason)


def _describe(exc: BaseException) -> str:
    """The error for a log line; an invalid URI is not repeated (it may hold user info)."""
    detail = exc.msg if isinstance(exc, InvalidURI) else str(exc)
    return f"{type(exc).__name__}: {detail}"


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, InvalidHandshake | ConnectionClosed | SilenceTimeout | OSError | TimeoutError)


def _closed_without_frame(exc: BaseException, outcome: SessionOutcome) -> bool:
    """Accepted, then closed before any frame: typically credentials refused after the auth frame."""
    return isinstance(exc, ConnectionClosed) and outcome.frames == 0


def _retry_after(exc: BaseException, policy: BackoffPolicy) -> float:
    """A numeric ``Retry-After`` of an HTTP 429/503 rejection, capped at the policy's maximum."""
    if not isinstance(exc, InvalidStatus) or exc.response.status_code not in (429, 503):
        return 0.0
    value = exc.response.headers.get("Retry-After", "")
    try:
        return min(policy.maximum, max(0.0, float(value)))
    except ValueError:
        return 0.0
