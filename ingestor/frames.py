"""Parsing one raw Galio frame into snapshots and quarantine entries (pure: no I/O)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingestor.normalize import normalize_account
from shared.canary import CANARY_ACCOUNT
from shared.keys import QUARANTINE_EXCERPT
from shared.models import Snapshot


@dataclass(frozen=True)
class QuarantineEntry:
    """A frame, or one account of a frame, set aside: the fields of the quarantine stream."""

    reason: str
    received_at: float
    excerpt: str

    def fields(self) -> dict[str, str]:
        return {"reason": self.reason, "received_at": repr(self.received_at), "excerpt": self.excerpt}


@dataclass(frozen=True)
class ParsedFrame:
    """Everything one frame yields: snapshots to publish and parts to quarantine."""

    snapshots: tuple[Snapshot, ...] = ()
    quarantined: tuple[QuarantineEntry, ...] = ()


class SequenceClock:
    """Sequence numbers: strictly increasing within the process, and across restarts because they
    start from the wall clock in microseconds (``max(previous + 1, now_us)``). No Redis round trip
    is needed, so frames can still be parsed and buffered while Redis is unavailable."""

    def __init__(self, now_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.now_us = now_us
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, self.now_us())
            return self._last


def parse_frame(text: str, received_at: float, next_seq: Callable[[], int]) -> ParsedFrame:
    """Parse one frame; never raises. A frame that is not a JSON object with an object ``pos`` is
    quarantined whole; an account whose value is not an object (or does not normalize) is
    quarantined alone, the other accounts are kept. Other top-level keys are ignored."""
    pos, reason = load_pos(text)
    if pos is None:
        return ParsedFrame(quarantined=(QuarantineEntry(reason, received_at, text[:QUARANTINE_EXCERPT]),))
    snapshots: list[Snapshot] = []
    quarantined: list[QuarantineEntry] = []
    for account, obj in pos.items():
        result = parse_account(account, obj, received_at, next_seq)
        if isinstance(result, Snapshot):
            snapshots.append(result)
        else:
            quarantined.append(result)
    return ParsedFrame(tuple(snapshots), tuple(quarantined))


def load_pos(text: str) -> tuple[dict[str, Any] | None, str]:
    """The ``pos`` object of a frame, or None and the reason it is malformed."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON: {str(exc)[:80]}"
    if not isinstance(data, dict):
        return None, f"frame is a JSON {type(data).__name__}, not an object"
    pos = data.get("pos")
    if not isinstance(pos, dict):
        return None, "pos missing" if pos is None else f"pos is a {type(pos).__name__}, not an object"
    return pos, ""


def parse_account(
    account: str, obj: Any, received_at: float, next_seq: Callable[[], int]
) -> Snapshot | QuarantineEntry:
    """One account's snapshot, or its quarantine entry (excerpt: ``{account: value}`` as JSON).
    The canary's reserved name (``shared.canary.CANARY_ACCOUNT``) is never an account of a feed."""
    if account == CANARY_ACCOUNT:
        return _quarantine_account(account, obj, received_at, "the name is reserved for MonitorX's canary")
    if not isinstance(obj, dict):
        return _quarantine_account(account, obj, received_at, f"not an object but a {type(obj).__name__}")
    try:
        return normalize_account(account, obj, received_at, next_seq())
    except (ValueError, OverflowError, TypeError) as exc:
        return _quarantine_account(account, obj, received_at, f"does not normalize: {str(exc)[:80]}")


def _quarantine_account(account: str, obj: Any, received_at: float, why: str) -> QuarantineEntry:
    excerpt = json.dumps({account: obj}, default=str)[:QUARANTINE_EXCERPT]
    return QuarantineEntry(f"account {account!r}: {why}", received_at, excerpt)
