"""Feed health: the ``feed_down`` alert of one Galio feed, as a pure state machine (no I/O).

The client tells :class:`FeedHealth` what happens (:meth:`~FeedHealth.connected`,
:meth:`~FeedHealth.frame`, :meth:`~FeedHealth.failure` with a reason from :func:`reason_of`) and
calls :meth:`~FeedHealth.evaluate` at least once per second. The feed is *down* once no frame
arrived for ``down_after`` seconds, counted from the last frame or, before the first one, from
the start. Going down yields one ``firing`` alert (however many reconnect attempts fail
meanwhile); the first frame afterwards yields one ``resolved`` alert. Both carry the reason and
the moment the frames stopped (``down_since``), from which their ids are derived, so the alerter
recognises a repeat. Every time is a unix time (``time.time()``), so the state survives a
restart through the status hash ``{p}feed:{name}`` (see :class:`FeedStatus`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from engine.alerts import make_alert
from engine.checks import fmt
from engine.checks.base import Message
from ingestor.backoff import SessionOutcome, SilenceTimeout
from shared.keys import FEED_ALERT_CHECK
from shared.models import Alert, AlertState

CHECK = FEED_ALERT_CHECK
"""The ``check`` of the alert, and the prefix of its instance ``feed_down:{feed}``."""
AUTH_FAILED_CODE = 4001
"""The close code with which Galio refuses credentials."""
CLOSE_REASON_CHARS = 60
"""Characters of a server's close reason kept in a reason."""

FeedState = Literal["up", "down"]
Connection = Literal["up", "down", "connecting"]


@dataclass(frozen=True)
class FeedStatus:
    """The feed as the ingestor last reported it: the fields of the hash ``{p}feed:{name}``.
    ``since`` is ``down_since`` while down, the first frame afterwards while up; ``reason`` is
    empty while up; ``updated_at`` is when the state last changed."""

    state: FeedState
    reason: str
    since: float
    updated_at: float

    def fields(self) -> dict[str, str]:
        """The hash fields; times as ``repr(float)`` so they read back exactly."""
        return {
            "state": self.state,
            "reason": self.reason,
            "since": repr(self.since),
            "updated_at": repr(self.updated_at),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> FeedStatus | None:
        """The status in a hash written by :meth:`fields`; None when absent or unreadable."""
        state = fields.get("state")
        try:
            since = float(fields.get("since", ""))
            updated_at = float(fields.get("updated_at", since))
        except ValueError:
            return None
        if state not in ("up", "down"):
            return None
        return cls("up" if state == "up" else "down", fields.get("reason", ""), since, updated_at)


class FeedHealth:
    """Whether one feed is up, and the ``feed_down`` alerts of its state changes."""

    def __init__(self, feed: str, where: str, down_after: float, started_at: float) -> None:
        """``where`` is the feed's address as it may appear in an alert (no credentials: see
        ``ingestor.client.display_uri``); ``started_at`` is when the ingestor started."""
        self.feed = feed
        self.instance = f"{CHECK}:{feed}"
        self._where = where
        self._down_after = down_after
        self._started_at = started_at
        self._last_frame: float | None = None
        self._connected_at: float | None = None
        self._reason: str | None = None
        self._down_since: float | None = None
        self._down_reason = ""
        self._back_at: float | None = None
        self.status = FeedStatus("up", "", started_at, started_at)
        """The state as of the last change (what the status hash should hold)."""

    def connection(self) -> Connection:
        """The feed as the ingestor's heartbeat shows it: ``down`` while its feed_down alert
        fires (until a frame arrives), else ``up`` while a session is open, else
        ``connecting`` (between sessions, reconnecting)."""
        if self._down_since is not None and self._back_at is None:
            return "down"
        return "up" if self._connected_at is not None else "connecting"

    @property
    def last_frame_at(self) -> float | None:
        """When the last frame arrived (None before the first)."""
        return self._last_frame

    def connected(self, now: float) -> None:
        """A session completed its handshake."""
        self._connected_at = now

    def frame(self, now: float) -> None:
        """A frame arrived (any frame, even one quarantined: the feed is alive)."""
        self._last_frame = now
        self._reason = None
        if self._down_since is not None and self._back_at is None:
            self._back_at = now

    def failure(self, reason: str, now: float) -> None:
        """A session or connection attempt failed; ``reason`` (see :func:`reason_of`) becomes the
        reason of a feed_down alert fired before the next frame."""
        self._reason = reason
        self._connected_at = None

    def adopt(self, status: FeedStatus) -> bool:
        """Take over an outage a previous ingestor reported (``status.state == "down"``): no
        second firing alert; the first frame resolves it with the same ``down_since``. Returns
        False (and changes nothing) when there is nothing to adopt or this one fired already."""
        if status.state != "down" or self._down_since is not None:
            return False
        self._down_since, self._down_reason, self.status = status.since, status.reason, status
        self._back_at = self._last_frame  # a frame that came in meanwhile resolves it at once
        return True

    def evaluate(self, now: float) -> list[Alert]:
        """The alert of a state change since the last call: ``[firing]`` when the feed has been
        quiet for ``down_after``, ``[resolved]`` when a frame came after that, else ``[]``."""
        if self._down_since is not None:
            return [] if self._back_at is None else [self._resolve(self._back_at, now)]
        quiet_since = self._started_at if self._last_frame is None else self._last_frame
        if now - quiet_since < self._down_after:
            return []
        return [self._fire(quiet_since, now)]

    def _fire(self, since: float, now: float) -> Alert:
        reason = self._current_reason(since, now)
        self._down_since, self._down_reason, self._back_at = since, reason, None
        self.status = FeedStatus("down", reason, since, now)
        text = (
            f"No frame from feed {self.feed} at {self._where} since {fmt.clock(since)} "
            f"({duration(now - since)}): {reason}."
        )
        return self._alert("firing", since, reason, text, now, now)

    def _resolve(self, back_at: float, now: float) -> Alert:
        since, reason = self._down_since, self._down_reason
        assert since is not None
        self._down_since, self._back_at = None, None
        self.status = FeedStatus("up", "", back_at, now)
        text = (
            f"Frames from feed {self.feed} at {self._where} flow again since {fmt.clock(back_at)}; "
            f"it was down for {duration(back_at - since)} (no frame since {fmt.clock(since)}: {reason})."
        )
        return self._alert("resolved", since, reason, text, back_at, now)

    def _current_reason(self, quiet_since: float, now: float) -> str:
        """The latest failure since the last frame; else a session open but silent; else plain silence."""
        if self._reason is not None:
            return self._reason
        if self._connected_at is not None:
            return f"connected but silent for {duration(now - max(self._connected_at, quiet_since))}"
        return f"no frame for {duration(now - quiet_since)}"

    def _alert(
        self, state: AlertState, since: float, reason: str, text: str, observed_at: float, now: float
    ) -> Alert:
        firing = state == "firing"
        title = f"Feed down: {self.feed}" if firing else f"Resolved: {CHECK} on {self.feed}"
        return make_alert(
            instance=self.instance,
            check=CHECK,
            account=self.feed,
            state=state,
            message=Message(title, text, "critical" if firing else "info"),
            observed_at=observed_at,
            emitted_at=now,
            keys=("feed",),
            labels={"feed": self.feed, "uri": self._where, "reason": reason},
            event=(self.instance, self.feed, CHECK, state, repr(since)),
        )


def reason_of(exc: BaseException, outcome: SessionOutcome, *, auth_sent: bool, silence_timeout: float) -> str:
    """The reason a session or connection attempt failed, in plain words for a feed_down alert
    (never a credential; the exception types are those :func:`ingestor.backoff.decide` sees).
    ``auth_sent``: the auth frame was sent in that session; ``silence_timeout``: the watchdog's
    interval (the duration a :class:`SilenceTimeout` reports)."""
    if isinstance(exc, SilenceTimeout):
        return f"connected but silent for {duration(silence_timeout)}"
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        return f"bad credentials (HTTP {code})" if code in (401, 403) else f"HTTP {code} at handshake"
    if isinstance(exc, ConnectionClosed):
        return _closed_reason(exc, outcome, auth_sent)
    if isinstance(exc, InvalidHandshake):
        return f"WebSocket handshake failed ({type(exc).__name__})"
    return _network_reason(exc)


def _closed_reason(exc: ConnectionClosed, outcome: SessionOutcome, auth_sent: bool) -> str:
    close = exc.rcvd
    if (close is not None and close.code == AUTH_FAILED_CODE) or (auth_sent and outcome.frames == 0):
        return "bad credentials (auth rejected)"
    if close is None:
        return "connection lost (no close frame)"
    said = f": {close.reason[:CLOSE_REASON_CHARS]}" if close.reason else ""
    return f"closed by the feed (code {close.code}{said})"


def _network_reason(exc: BaseException) -> str:
    if _refused(exc):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed ({exc.strerror or 'unknown host'})"
    if isinstance(exc, TimeoutError):  # an OSError: before the generic case
        return "timed out opening the connection"
    if isinstance(exc, OSError):
        return f"network error ({exc.strerror or type(exc).__name__})"
    return f"unexpected error ({type(exc).__name__})"


def _refused(exc: BaseException) -> bool:
    """Refused, also when asyncio tried several addresses (``localhost``: ``::1`` and
    ``127.0.0.1``) and raised one ``OSError("Multiple exceptions: ...")`` without an errno."""
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", 0) == errno.ECONNREFUSED:
        return True
    return isinstance(exc, OSError) and exc.errno is None and f"[Errno {errno.ECONNREFUSED}]" in str(exc)


def duration(seconds: float) -> str:
    """A duration for people: ``0.3s``, ``30s``, ``2m 05s``, ``3h 07m``."""
    if seconds < 100:
        return f"{round(max(seconds, 0.0), 1):g}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
