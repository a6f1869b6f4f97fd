"""Where alerts go. Every sink has a stable ``name`` (used in the Redis delivery markers) and
``deliver(alert, delivered_at)``, which returns on success and raises :class:`DeliveryError` on
failure, saying whether a later retry can help.

Webhook URLs are secrets: they never appear in a log line, an error message or Redis. The Slack
SDK logs the request URL (at DEBUG, and at INFO when it retries a connection error), so its client
gets a private logger that drops DEBUG and scrubs the URL from everything else.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from http.client import HTTPException
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from pydantic import SecretStr
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest as RetryRequest
from slack_sdk.http_retry.response import HttpResponse as RetryResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.webhook import WebhookClient

from shared.lifecycle import REDACTED, redact
from shared.models import Alert
from shared.settings import AlertSettings

log = logging.getLogger(__name__)

ERROR_CHARS = 300
"""Longest excerpt of a response body or exception text kept in an error message."""
TRANSPORT_ERRORS = (OSError, HTTPException, SlackClientError, ValueError)
"""What an HTTP post can raise besides a status: connection refused/reset, timeouts (OSError,
URLError), truncated responses (HTTPException), a bad URL or header value (ValueError)."""


class DeliveryError(Exception):
    """A sink could not deliver. ``retryable``: a later attempt may succeed (timeouts, 429, 5xx);
    otherwise the alert goes to the dead-letter stream at once (e.g. 400 or 404 from a webhook)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class Sink(Protocol):
    """One destination of alerts."""

    name: str
    """Stable id used in the ``sent:{sink}:{alert_id}`` markers: never change it."""

    def deliver(self, alert: Alert, delivered_at: float) -> None:
        """Deliver one alert or raise DeliveryError."""


def alert_record(alert: Alert, delivered_at: float) -> dict[str, Any]:
    """Every Alert field plus ``delivered_at``: one JSONL line, one webhook body."""
    return {**alert.model_dump(mode="json"), "delivered_at": delivered_at}


def _scrub(text: str, secret: str) -> str:
    """``text`` without the secret URL (nor anything :func:`shared.lifecycle.redact` knows)."""
    return redact(text.replace(secret, REDACTED) if secret else text)


def _describe(exc: BaseException, secret: str) -> str:
    return _scrub(f"{type(exc).__name__}: {exc}", secret)[:ERROR_CHARS]


def _check_http_url(url: str, what: str) -> None:
    """Refuse anything but http(s) (urllib also opens file:// URLs); the URL is not echoed."""
    if urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).netloc:
        raise ValueError(f"{what} must be an http:// or https:// URL")


def _retryable_status(status: int) -> bool:
    return status in {408, 429} or status >= 500


class ConsoleSink:
    """Readable multi-line text on a stream (standard output by default, looked up per alert)."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def deliver(self, alert: Alert, delivered_at: float) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(format_console(alert))
            stream.flush()
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"console: {_describe(exc, '')}", retryable=True) from exc


def format_console(alert: Alert) -> str:
    """``[FIRING] severity check account`` then the title and the indented text, then a blank line."""
    head = f"[{alert.state.upper()}] {alert.severity} {alert.check} account={alert.account}"
    body = "\n".join(f"    {line}" for line in alert.text.splitlines())
    return f"{head}\n  {alert.title}\n{body}\n\n"


class JsonlSink:
    """Appends one JSON object per alert to a file (opened per alert: rotation-friendly)."""

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path

    def deliver(self, alert: Alert, delivered_at: float) -> None:
        line = json.dumps(alert_record(alert, delivered_at), ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
        except OSError as exc:
            raise DeliveryError(f"jsonl {self.path}: {_describe(exc, '')}", retryable=True) from exc


class CappedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack-sdk's 429 handler (sleeps Retry-After), but only for waits up to ``max_wait`` seconds:
    a longer or unparsable Retry-After returns the 429 to us, and the alerter retries the alert
    later from the pending list instead of holding up the other sinks."""

    def __init__(self, max_retry_count: int = 1, max_wait: float = 5.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: RetryRequest,
        response: RetryResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        values = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
        text = str(values[0]).strip()
        return text.isdigit() and int(text) <= self.max_wait


class _SecretFilter(logging.Filter):
    """Scrubs one secret from every record of the logger it is attached to."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _scrub(message, self._secret)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def private_sdk_logger(secret: str) -> logging.Logger:
    """A logger for one SDK client: not registered globally (so nobody can lower its level), level
    INFO (slack-sdk then skips its DEBUG lines, which carry the URL), the secret scrubbed from the
    rest, records passed on to this module's logger and so to the configured handlers."""
    logger = logging.Logger(f"{__name__}.slack_sdk", logging.INFO)
    logger.parent = log
    logger.addFilter(_SecretFilter(secret))
    return logger


def slack_message(alert: Alert) -> tuple[str, list[dict[str, Any]]]:
    """Fallback text plus Block Kit: a header and a section with the text and the identifiers."""
    icon = ":red_circle:" if alert.state == "firing" else ":large_green_circle:"
    headline = f"[{alert.state.upper()}] {alert.title}"
    details = f"*check* `{alert.check}` · *account* `{alert.account}` · *severity* {alert.severity}"
    section = f"{_slack_escape(alert.text)}\n{_slack_escape(details)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": section[:3000]}},
    ]
    return f"{icon} {_slack_escape(headline)}\n{_slack_escape(alert.text)}"[:4000], blocks


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackWebhookSink:
    """A Slack incoming webhook through slack-sdk's WebhookClient, which retries in-process: a
    connection error once, a 429 after Retry-After (up to ``max_retry_after`` s), a 500/503 up
    to ``server_retries`` times with ``backoff`` (default: 0.5 s doubling, plus up to 1 s of
    jitter). Anything but 200 after that is a DeliveryError.

    An incoming webhook has no idempotency key: a post whose response was lost (reset, timeout)
    may have landed, and retrying it can show the message twice."""

    name = "slack"

    def __init__(
        self,
        url: SecretStr,
        timeout: float = 10.0,
        *,
        max_retry_after: float = 5.0,
        server_retries: int = 2,
        backoff: RetryIntervalCalculator | None = None,
    ) -> None:
        self._secret = url.get_secret_value()
        _check_http_url(self._secret, "the Slack webhook URL")
        interval = backoff or BackoffRetryIntervalCalculator()
        handlers: list[RetryHandler] = [
            ConnectionErrorRetryHandler(max_retry_count=1, interval_calculator=interval),
            CappedRateLimitRetryHandler(max_retry_count=1, max_wait=max_retry_after),
            ServerErrorRetryHandler(max_retry_count=server_retries, interval_calculator=interval),
        ]
        self._client = WebhookClient(
            self._secret,
            timeout=max(1, math.ceil(timeout)),
            logger=private_sdk_logger(self._secret),
            retry_handlers=handlers,
        )

    def __repr__(self) -> str:
        return "SlackWebhookSink(url=<secret>)"

    def deliver(self, alert: Alert, delivered_at: float) -> None:
        text, blocks = slack_message(alert)
        try:
            response = self._client.send(text=text, blocks=blocks)
        except TRANSPORT_ERRORS as exc:
            # no exception chaining: the cause's text could carry the URL into a traceback
            raise DeliveryError(f"slack: {_describe(exc, self._secret)}", retryable=True) from None
        if response.status_code != 200:
            status, body = response.status_code, _scrub(str(response.body), self._secret)[:ERROR_CHARS]
            raise DeliveryError(f"slack: HTTP {status} {body}", retryable=_retryable_status(status))


class HttpWebhookSink:
    """POSTs the alert record (every Alert field plus ``delivered_at``) as JSON. 2xx is success;
    408, 429, 5xx and connection errors are retryable; other statuses are not. The header
    ``Idempotency-Key`` carries the alert id, so a receiver can drop a repeated post."""

    name = "webhook"

    def __init__(self, url: SecretStr, timeout: float = 10.0) -> None:
        self._secret = url.get_secret_value()
        _check_http_url(self._secret, "the webhook URL")
        self._timeout = timeout

    def __repr__(self) -> str:
        return "HttpWebhookSink(url=<secret>)"

    def deliver(self, alert: Alert, delivered_at: float) -> None:
        request = Request(
            self._secret,
            data=json.dumps(alert_record(alert, delivered_at)).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": alert.id},
        )
        try:
            with urlopen(request, timeout=self._timeout) as response:
                status = int(response.status)
        except HTTPError as exc:
            exc.close()
            raise DeliveryError(f"webhook: HTTP {exc.code}", retryable=_retryable_status(exc.code)) from None
        except TRANSPORT_ERRORS as exc:
            raise DeliveryError(f"webhook: {_describe(exc, self._secret)}", retryable=True) from None
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook: HTTP {status}", retryable=_retryable_status(status))


def build_sinks(settings: AlertSettings) -> list[Sink]:
    """The sinks the settings configure, in delivery order (the local ones first)."""
    sinks: list[Sink] = []
    if settings.console:
        sinks.append(ConsoleSink())
    if settings.alerts_jsonl is not None:
        sinks.append(JsonlSink(settings.alerts_jsonl))
    if settings.slack_webhook_url is not None:
        sinks.append(SlackWebhookSink(settings.slack_webhook_url, settings.http_timeout))
    if settings.webhook_url is not None:
        sinks.append(HttpWebhookSink(settings.webhook_url, settings.http_timeout))
    return sinks
