"""The receivers of notifications (``alerter.notify.Receiver``): console, JSONL file, generic
webhook, Slack incoming webhook; Slack bot mode is ``alerter.slackbot``.

What each one sends of a notification:

* console, jsonl, webhook: one entry per alert *to post*: the alerts of ``notification.new``
  (for a route repeat, which has none new, ``notification.alerts``), in order, formatted exactly
  as the legacy sinks of ``alerter.sinks`` do (``format_console``; ``alert_record`` plus the
  ``group_key`` in the JSONL line; ``alert_record`` as the webhook body with the alert id as
  ``Idempotency-Key``). A group's route decides *when* they hear about its alerts (group_wait,
  group_interval, repeat_interval), never the shape of what they get. If a notification with
  several alerts fails midway, the error is raised and the pipeline sends the whole
  notification again: the alerts already written are written again (console, jsonl), and a
  webhook receiver can drop a repeated post by its ``Idempotency-Key``.
* slack_webhook: one message per notification: exactly ``slack_message(alert)`` when there is
  one alert to post (legacy parity), else ``layout.group_message`` of the whole group. An
  incoming webhook returns no message id, so nothing is ever updated or threaded.

None of them can change what it sent: ``send`` returns None. Errors are the sinks' own
(``DeliveryError``, retryable or not, with ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr

from alerter import layout
from alerter.notify import MessageRef, Notification, Receiver
from alerter.sinks import (
    ERROR_CHARS,
    TRANSPORT_ERRORS,
    ConsoleSink,
    DeliveryError,
    HttpWebhookSink,
    SlackWebhookSink,
    _scrub,
    alert_record,
    slack_message,
    status_error,
)
from alerter.slackbot import SlackBotReceiver
from shared.config import Receiver as ReceiverConfig
from shared.models import Alert
from shared.settings import AlertSettings

DEFAULT_TIMEOUT = 10.0
"""Seconds an HTTP receiver built by :func:`build_receiver` waits for a reply (the settings'
``MONITORX_HTTP_TIMEOUT`` default)."""


def to_post(n: Notification) -> tuple[Alert, ...]:
    """The alerts a per-alert receiver writes for ``n``: its new events, or for a route repeat
    (nothing new) every alert of the group."""
    return n.alerts if n.repeat else n.new


class ConsoleReceiver:
    """``format_console`` of each alert to post, on a stream (standard output by default)."""

    channel = ""

    def __init__(self, name: str = "console", stream: TextIO | None = None) -> None:
        self.name = name
        self._sink = ConsoleSink(stream)

    def send(self, notification: Notification, ref: MessageRef | None, now: float) -> MessageRef | None:
        """Write every alert to post, in order; DeliveryError (retryable) if the stream fails."""
        for alert in to_post(notification):
            self._sink.deliver(alert, now)
        return None


class JsonlReceiver:
    """One line per alert to post: ``alert_record(alert, now)`` plus ``group_key`` (not for the
    legacy ``.env`` sink, ``group_key=False``: its lines stay exactly as they were), appended to
    a file opened per notification (rotation-friendly), all lines in one write."""

    channel = ""

    def __init__(self, path: Path, name: str = "jsonl", group_key: bool = True) -> None:
        self.name = name
        self.path = path
        self._group_key = group_key

    def send(self, notification: Notification, ref: MessageRef | None, now: float) -> MessageRef | None:
        """Append the lines; DeliveryError (retryable) if the file cannot be written."""
        group = {"group_key": notification.group_key} if self._group_key else {}
        lines = "".join(
            json.dumps({**alert_record(a, now), **group}, ensure_ascii=False) + "\n"
            for a in to_post(notification)
        )
        if not lines:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(lines)
                out.flush()
        except OSError as exc:
            message = f"jsonl {self.path}: {type(exc).__name__}: {exc}"[:ERROR_CHARS]
            raise DeliveryError(message, retryable=True) from exc
        return None


class WebhookReceiver:
    """One JSON POST per alert to post, in order: the legacy body ``alert_record(alert, now)``
    with ``Idempotency-Key: <alert id>`` (``HttpWebhookSink``). Not paced (``channel`` empty):
    a generic webhook has no documented rate; a 429 comes back with its ``Retry-After``."""

    channel = ""

    def __init__(self, url: SecretStr, timeout: float = DEFAULT_TIMEOUT, name: str = "webhook") -> None:
        self.name = name
        self._sink = HttpWebhookSink(url, timeout)

    def send(self, notification: Notification, ref: MessageRef | None, now: float) -> MessageRef | None:
        """Post every alert to post; the first failure raises (see the module docstring)."""
        for alert in to_post(notification):
            self._sink.deliver(alert, now)
        return None


class SlackWebhookReceiver(SlackWebhookSink):
    """A Slack incoming webhook (``SlackWebhookSink``'s client, retries and errors), one message
    per notification. ``channel`` (the pacing key) is ``webhook:`` and a short hash of the URL,
    never the URL; ``paced=False`` (the legacy ``.env`` sink, unchanged: a 429 is still honoured)
    leaves it empty."""

    def __init__(
        self,
        url: SecretStr,
        timeout: float = DEFAULT_TIMEOUT,
        name: str = "slack",
        paced: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, timeout, **kwargs)
        self.name = name
        digest = hashlib.sha256(self._secret.encode()).hexdigest()[:12]
        self.channel = f"webhook:{digest}" if paced else ""

    def send(self, notification: Notification, ref: MessageRef | None, now: float) -> MessageRef | None:
        """Post ``slack_message`` of the one alert to post, or ``group_message`` of the group
        when there are several; nothing when there is none."""
        alerts = to_post(notification)
        if not alerts:
            return None
        text, blocks = (
            slack_message(alerts[0]) if len(alerts) == 1 else layout.group_message(notification, thread=False)
        )
        self._post(text, blocks, now)
        return None

    def _post(self, text: str, blocks: list[dict[str, Any]], now: float) -> None:
        """As ``SlackWebhookSink.deliver``, with the message given."""
        try:
            response = self._client.send(text=text, blocks=blocks)
        except TRANSPORT_ERRORS as exc:
            detail = _scrub(f"{type(exc).__name__}: {exc}", self._secret)[:ERROR_CHARS]
            raise DeliveryError(f"{self.name}: {detail}", retryable=True) from None
        if response.status_code != 200:
            self._refused(response.status_code, str(response.body), response.headers, now)

    def _refused(self, status: int, body: str, headers: Mapping[str, Any], now: float) -> None:
        wait = next((str(v) for k, v in headers.items() if k.lower() == "retry-after"), None)
        detail = _scrub(body, self._secret)[:ERROR_CHARS]
        raise status_error(self.name, status, f" {detail}", wait, now)


def build_receiver(
    name: str, config: ReceiverConfig, env: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> Receiver:
    """The receiver ``config`` (``receivers.NAME`` of the YAML) describes, its secrets read from
    ``env`` (``shared.config.secret_environment()``). ValueError naming the variable when a
    secret is unset, or when a URL is not http(s) (the URL is never echoed)."""
    kind = config.kind
    if config.console is not None:
        return ConsoleReceiver(name)
    if config.jsonl is not None:
        return JsonlReceiver(config.jsonl.path, name)
    if config.slack_webhook is not None:
        url = _secret(name, kind, "url_env", config.slack_webhook.url_env, env)
        return SlackWebhookReceiver(url, timeout, name)
    if config.webhook is not None:
        return WebhookReceiver(_secret(name, kind, "url_env", config.webhook.url_env, env), timeout, name)
    bot = config.slack_bot
    assert bot is not None  # a Receiver has exactly one kind
    token = _secret(name, kind, "token_env", bot.token_env, env)
    return SlackBotReceiver(name, token, bot.channel, bot.api_url, timeout)


def _secret(name: str, kind: str, field: str, variable: str, env: Mapping[str, str]) -> SecretStr:
    value = env.get(variable)
    if not value:
        raise ValueError(f"receivers.{name}.{kind}.{field}: environment variable {variable} is not set")
    return SecretStr(value)


def legacy_receivers(settings: AlertSettings) -> list[Receiver]:
    """The receivers of the ``.env`` settings, in the order of the legacy sinks:
    ``console``, ``jsonl``, ``slack``, ``webhook`` (those set)."""
    receivers: list[Receiver] = []
    if settings.console:
        receivers.append(ConsoleReceiver("console"))
    if settings.alerts_jsonl is not None:
        receivers.append(JsonlReceiver(settings.alerts_jsonl, "jsonl", group_key=False))
    if settings.slack_webhook_url is not None:
        url, timeout = settings.slack_webhook_url, settings.http_timeout
        receivers.append(SlackWebhookReceiver(url, timeout, "slack", paced=False))
    if settings.webhook_url is not None:
        receivers.append(WebhookReceiver(settings.webhook_url, settings.http_timeout, "webhook"))
    return receivers
