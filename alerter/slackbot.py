"""Slack bot mode: one message per incident of a group, updated in place, repeats in its thread.

A ``slack_bot`` receiver posts with a bot token (scopes ``chat:write`` and ``channels:history``,
``groups:history`` for a private channel) through slack-sdk's ``WebClient``:

* **first notification** of an incident (no ``MessageRef`` yet): ``chat.postMessage`` of
  ``layout.group_message`` with Slack message metadata ``{"event_type": "monitorx_group",
  "event_payload": {"group_key", "version", "resolved"}}``; when the group does not fit in one
  message, the accounts left out follow as replies in its thread (``layout.overflow_text``).
* **later notifications** (the ref given back by the pipeline): ``chat.update`` of the same
  message with the whole group as it is now (accounts joined, keys resolved; all resolved: the
  message shows ``[RESOLVED]``), metadata updated. A repeat also goes as a reply in the thread:
  a cooldown repeat (an alert of ``new`` that the message already showed firing) or a route
  repeat (``repeat``); a reply with ``reply_broadcast`` (shown in the channel too) goes whenever
  the highest firing severity rose above what the message showed before, whether by a repeat or
  by an alert that joined (an update alone notifies nobody). When the accounts left out of the
  message change, their list is posted in the thread again. A message deleted in Slack
  (``message_not_found``) is replaced by a new one.
* **no duplicate across a crash**: the pipeline records the ref only after ``send`` returned, so
  a crash (or a lost reply) between the post and the record sends the first notification again,
  with no ref. Before posting, the receiver reads the channel's last :data:`HISTORY_LIMIT`
  messages (``conversations.history`` with metadata) and *adopts* the newest message of this
  group key instead of posting again (it updates it with the current content). The rule that
  keeps a new incident from adopting the previous incident's message: adopt only when the
  notification is the incident's first (``version == 1``) and the newest message of the group
  key says ``resolved: false`` (with ``version >= 1``); a resolved incident's last update wrote
  ``resolved: true``, so the group's next incident posts a new message. Limits: the channel must
  be configured by id (``C0123ABCD``; Slack reads history by id only: with a ``#name`` nothing
  is adopted and a warning says so), and more than :data:`HISTORY_LIMIT` messages in the channel
  between the lost post and its retry let the retry post again. The thread replies of a retried
  notification (overflow list, repeat) can show twice.
* **pacing**: the pipeline paces notifications per ``channel``; a notification needing several
  writes (update and reply, post and overflow replies) spaces its writes here, at least
  :data:`WRITE_INTERVAL` apart (from the end of one to the start of the next), so one receiver
  never writes to its channel faster than Slack's one message per second. No write is retried
  in here (``retry_handlers=[]``: slack-sdk's default retries a post whose reply was lost, which
  posts it twice); every failure reaches the pipeline as a ``DeliveryError``.

Errors: Slack's ``ratelimited`` (HTTP 429, with ``Retry-After``), HTTP 5xx and the errors of
:data:`RETRYABLE_ERRORS` are retryable; every other refusal (``invalid_auth``,
``channel_not_found``, ``invalid_blocks``, ``missing_scope``...) is permanent; a transport error
(connection refused or reset, timeout) is retryable. The token never appears in an error, a log
line or a repr.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from alerter import layout
from alerter.notify import MessageRef, Notification
from alerter.sinks import (
    ERROR_CHARS,
    TRANSPORT_ERRORS,
    DeliveryError,
    _header,
    _scrub,
    private_sdk_logger,
    retry_after_seconds,
    status_error,
)
from shared.config import SLACK_API_URL
from shared.models import Alert

log = logging.getLogger(__name__)

GROUP_EVENT = "monitorx_group"
"""The ``event_type`` of the metadata on every group message MonitorX posts."""
HISTORY_LIMIT = 100
"""Messages of the channel (newest first) searched for a group's message before a first post."""
WRITE_INTERVAL = 1.0
"""Least seconds between two writes of one receiver to its channel (Slack: one message per
second per channel)."""
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
"""Slack errors (answered with HTTP 200 and ``ok: false``) after which a later attempt may work."""
GONE = frozenset({"message_not_found"})
"""``chat.update`` errors meaning the message is no longer there: a new one is posted."""
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
_DEFAULT_TIMEOUT = 10.0


class SlackBotReceiver:
    """A Slack channel written with a bot token (see the module docstring). ``channel`` (the
    pacing key) is the channel as configured; refs carry the id Slack answers with. ``timeout``:
    seconds per Web API call (whole seconds, rounded up, as slack-sdk takes them);
    ``write_interval``: :data:`WRITE_INTERVAL` unless given (0 against an unpaced stand-in)."""

    def __init__(
        self,
        name: str,
        token: SecretStr,
        channel: str,
        api_url: str = SLACK_API_URL,
        timeout: float = _DEFAULT_TIMEOUT,
        *,
        write_interval: float = WRITE_INTERVAL,
    ) -> None:
        self.name = name
        self.channel = channel
        self._token = token.get_secret_value()
        self._client = WebClient(
            token=self._token,
            base_url=api_url if api_url.endswith("/") else api_url + "/",
            timeout=max(1, math.ceil(timeout)),
            retry_handlers=[],
            logger=private_sdk_logger(self._token),
        )
        self._interval = write_interval
        self._lock = threading.Lock()
        self._last_write = -math.inf

    def __repr__(self) -> str:
        return f"SlackBotReceiver(name={self.name!r}, channel={self.channel!r})"

    def send(self, notification: Notification, ref: MessageRef | None, now: float) -> MessageRef:
        """Post or update the group's message (and its thread replies); the message's ref, or
        DeliveryError (``now``: the time a ``Retry-After`` date is counted from)."""
        try:
            if ref is None:
                return self._open(notification)
            return self._change(notification, ref)
        except SlackApiError as exc:
            raise self._api_error(exc, now) from None
        except TRANSPORT_ERRORS as exc:
            detail = _scrub(f"{type(exc).__name__}: {exc}", self._token)[:ERROR_CHARS]
            raise DeliveryError(f"{self.name}: {detail}", retryable=True) from None

    # ---- the message ---------------------------------------------------------------------

    def _open(self, n: Notification) -> MessageRef:
        """The first notification of an incident: adopt the message a lost send posted, or post."""
        ts = self._adoptable(n)
        if ts is not None and self._update(n, self.channel, ts):
            log.info(
                "%s: adopted message %s of group %s (posted before a lost record)", self.name, ts, n.group_key
            )
            return self._list_overflow(n, self.channel, ts, listed="")
        return self._post(n)

    def _change(self, n: Notification, ref: MessageRef) -> MessageRef:
        """A later notification: update the message, then reply in its thread when due."""
        if not self._update(n, ref.channel, ref.ts):
            log.warning(
                "%s: message %s of group %s is gone, posting a new one", self.name, ref.ts, n.group_key
            )
            return self._post(n)
        self._reply(n, ref)
        return self._list_overflow(n, ref.channel, ref.ts, listed=str(ref.data.get("listed", "")))

    def _post(self, n: Notification) -> MessageRef:
        text, blocks = layout.group_message(n)
        answer = self._write(
            lambda: self._client.chat_postMessage(
                channel=self.channel, text=text, blocks=blocks, metadata=_metadata(n)
            )
        )
        return self._list_overflow(n, str(answer["channel"]), str(answer["ts"]), listed="")

    def _update(self, n: Notification, channel: str, ts: str) -> bool:
        """Show the group as it is now in message ``ts``; False when that message is gone."""
        text, blocks = layout.group_message(n)
        try:
            self._write(
                lambda: self._client.chat_update(
                    channel=channel, ts=ts, text=text, blocks=blocks, metadata=_metadata(n)
                )
            )
        except SlackApiError as exc:
            if _error(exc.response) not in GONE:
                raise
            return False
        return True

    def _adoptable(self, n: Notification) -> str | None:
        """The ts of the message of this incident a lost send posted (see the module docstring)."""
        if n.version != 1:
            return None
        if not _CHANNEL_ID.fullmatch(self.channel):
            log.warning("%s: channel %r is not an id: no check for an earlier post", self.name, self.channel)
            return None
        answer = self._client.conversations_history(
            channel=self.channel, include_all_metadata=True, limit=HISTORY_LIMIT
        )
        for message in answer.get("messages") or []:
            payload = _group_payload(message)
            if payload is not None and payload.get("group_key") == n.group_key:
                version = payload.get("version")
                fresh = isinstance(version, int) and version >= 1 and payload.get("resolved") is False
                return str(message["ts"]) if fresh else None
        return None

    # ---- the thread ----------------------------------------------------------------------

    def _reply(self, n: Notification, ref: MessageRef) -> None:
        """Repeats (and any rise of severity, broadcast) as one reply in the message's thread."""
        shown = set(ref.data.get("firing") or ())
        before = layout.severity_rank(ref.data.get("severity"))
        rose = layout.severity_rank(layout.highest_severity(n.firing)) > before
        if n.repeat:
            repeats: tuple[Alert, ...] = n.firing
        else:
            repeats = tuple(a for a in n.new if a.state == "firing" and a.fingerprint in shown)
        raised = {a.fingerprint for a in n.firing if rose and layout.severity_rank(a.severity) > before}
        alerts = [a for a in n.firing if a in repeats or a.fingerprint in raised]
        if not alerts:
            return
        if rose:
            note = f":arrow_up: *Severity rose to {layout.highest_severity(n.firing)}*"
        else:
            note = ":repeat: *Still firing*"
        text, blocks = layout.reply_message(note, alerts)
        self._write(
            lambda: self._client.chat_postMessage(
                channel=ref.channel, thread_ts=ref.ts, text=text, blocks=blocks, reply_broadcast=rose
            )
        )

    def _list_overflow(self, n: Notification, channel: str, ts: str, listed: str) -> MessageRef:
        """Post the accounts the message leaves out in its thread, unless the list posted last
        (``listed``, its digest) is the same; the ref with what the message shows now."""
        digest = layout.overflow_digest(n)
        if digest and digest != listed:
            for chunk in layout.overflow_text(n):
                self._write(partial(self._client.chat_postMessage, channel=channel, thread_ts=ts, text=chunk))
        data = {
            "firing": sorted({a.fingerprint for a in n.firing}),
            "severity": layout.highest_severity(n.firing),
            "listed": digest,
        }
        return MessageRef(channel=channel, ts=ts, data=data)

    # ---- plumbing ------------------------------------------------------------------------

    def _write(self, call: Callable[[], SlackResponse]) -> SlackResponse:
        """One write to Slack, at least ``write_interval`` after this receiver's previous one."""
        with self._lock:
            wait = self._last_write + self._interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # spacing this receiver's own writes, not a retry
            try:
                return call()
            finally:
                self._last_write = time.monotonic()

    def _api_error(self, exc: SlackApiError, now: float) -> DeliveryError:
        """The DeliveryError of a refusal: by HTTP status when not 200, else by Slack's error."""
        response = exc.response
        method = str(response.api_url).rsplit("/", 1)[-1]
        error = _error(response)
        needed = response.data.get("needed") if isinstance(response.data, dict) else None
        detail = _scrub(f" {error}" + (f" (needs {needed})" if needed else ""), self._token)[:ERROR_CHARS]
        wait = _header(response.headers, "Retry-After")
        if response.status_code != 200:
            return status_error(f"{self.name} {method}", response.status_code, detail, wait, now)
        limited = error == "ratelimited"
        return DeliveryError(
            f"{self.name} {method}:{detail}",
            retryable=error in RETRYABLE_ERRORS,
            retry_after=retry_after_seconds(wait, now) if limited else None,
            rate_limited=limited,
        )


def _metadata(n: Notification) -> dict[str, Any]:
    """The metadata of a group message: what adoption reads back."""
    payload = {"group_key": n.group_key, "version": n.version, "resolved": n.resolved}
    return {"event_type": GROUP_EVENT, "event_payload": payload}


def _group_payload(message: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The payload of a MonitorX group message's metadata, None for any other message."""
    metadata = message.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != GROUP_EVENT:
        return None
    payload = metadata.get("event_payload")
    return payload if isinstance(payload, Mapping) else None


def _error(response: SlackResponse) -> str:
    """Slack's ``error`` of a refused call (``unknown`` when the body says none)."""
    data = response.data
    return str(data.get("error") or "unknown") if isinstance(data, dict) else "unknown"
