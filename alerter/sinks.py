"""The legacy formats and clients the receivers (``alerter.receivers``) are built on: console
text, the JSON alert record, the Slack webhook message and client, the HTTP webhook, and
:class:`DeliveryError`, which says whether a later retry can help and, for a rate limit (HTTP
429), how long the receiver asked us to wait. Nothing here sleeps on a rate limit: the delivery
loop rests that receiver alone.

Webhook URLs are secrets: they never appear in a log line, an error message or Redis. The Slack
SDK logs the request URL (at DEBUG, and at INFO when it retries a connection error), so its client
gets a private logger that drops DEBUG and scrubs the URL from everything else.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from typing import Any, TextIO
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from pydantic import SecretStr
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.webhook import WebhookClient

from shared.lifecycle import REDACTED, redact
from shared.models import Alert

log = logging.getLogger(__name__)

ERROR_CHARS = 300
"""Longest excerpt of a response body or exception text kept in an error message."""
TRANSPORT_ERRORS = (OSError, HTTPException, SlackClientError, ValueError)
"""What an HTTP post can raise besides a status: connection refused/reset, timeouts (OSError,
URLError), truncated responses (HTTPException), a bad URL or header value (ValueError)."""


class DeliveryError(Exception):
    """A sink could not deliver. ``retryable``: a later attempt may succeed (timeouts, 429, 5xx);
    otherwise the alert goes to the dead-letter stream at once (e.g. 400 or 404 from a webhook).
    ``rate_limited``: the receiver said "too many requests" (429); that costs no delivery attempt.
    ``retry_after``: seconds the receiver asked us to wait (its ``Retry-After``), None when it did
    not say (or said something unreadable): the alerter then backs off as after any failure."""

    def __init__(
        self, message: str, retryable: bool, *, retry_after: float | None = None, rate_limited: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.rate_limited = rate_limited


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


TOO_MANY_REQUESTS = 429
_DELTA_SECONDS = re.compile(r"\d{1,12}(\.\d{1,6})?")


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds from ``now`` (unix time): delta
    seconds (``10``, also ``10.5``) or an HTTP date (a date already past: 0). None when the header
    is missing or unreadable (negative, ``nan``, words...)."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _header(headers: Mapping[str, object], name: str) -> str | None:
    """A header's value, its name matched in any case (slack-sdk keeps them as received)."""
    found = next((value for key, value in headers.items() if key.lower() == name.lower()), None)
    if isinstance(found, list):  # some clients keep a list of values per header
        found = found[0] if found else None
    return None if found is None else str(found)


def status_error(sink: str, status: int, detail: str, retry_after: str | None, now: float) -> DeliveryError:
    """The DeliveryError of an HTTP status other than success: retryable or not, and for a 429
    the wait its ``Retry-After`` header (``retry_after``) asks for."""
    limited = status == TOO_MANY_REQUESTS
    return DeliveryError(
        f"{sink}: HTTP {status}{detail}",
        retryable=status in {408, 429} or status >= 500,
        retry_after=retry_after_seconds(retry_after, now) if limited else None,
        rate_limited=limited,
    )


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


def private_sdk_logger(secret: str) -> logging.Logger:
    """A logger for one SDK client: not registered globally (so nobody can lower its level), level
    INFO (slack-sdk then skips its DEBUG lines, which carry the URL), the secret scrubbed from the
    rest, records passed on to this module's logger and so to the configured handlers."""

    def scrub(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _scrub(message, secret)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True

    logger = logging.Logger(f"{__name__}.slack_sdk", logging.INFO)
    logger.parent = log
    logger.addFilter(scrub)
    return logger


def slack_message(alert: Alert) -> tuple[str, list[dict[str, Any]]]:
    """Fallback text plus Block Kit: a header and a section with the text and the identifiers."""
    icon = ":red_circle:" if alert.state == "firing" else ":large_green_circle:"
    headline = f"[{alert.state.upper()}] {alert.title}"
    details = f"*check* `{alert.check}` · *account* `{alert.account}` · *severity* {alert.severity}"
    section = f"{slack_escape(alert.text)}\n{slack_escape(details)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": section[:3000]}},
    ]
    return f"{icon} {slack_escape(headline)}\n{slack_escape(alert.text)}"[:4000], blocks


def slack_escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as Slack's mrkdwn wants them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackWebhookSink:
    """A Slack incoming webhook through slack-sdk's WebhookClient, which retries in-process a
    connection error once and a 500/503 up to ``server_retries`` times with ``backoff`` (default:
    0.5 s doubling, plus up to 1 s of jitter). Anything but 200 after that is a DeliveryError. A
    429 is never slept on in here (slack-sdk's rate-limit handler is left out on purpose): it comes
    back at once with its ``Retry-After``, and the alerter rests this sink alone for that long.

    An incoming webhook has no idempotency key: a post whose response was lost (reset, timeout)
    may have landed, and retrying it can show the message twice."""

    name = "slack"

    def __init__(
        self,
        url: SecretStr,
        timeout: float = 10.0,
        *,
        server_retries: int = 2,
        backoff: RetryIntervalCalculator | None = None,
    ) -> None:
        self._secret = url.get_secret_value()
        _check_http_url(self._secret, "the Slack webhook URL")
        interval = backoff or BackoffRetryIntervalCalculator()
        handlers: list[RetryHandler] = [
            ConnectionErrorRetryHandler(max_retry_count=1, interval_calculator=interval),
            ServerErrorRetryHandler(max_retry_count=server_retries, interval_calculator=interval),
        ]
        self._client = WebhookClient(
            self._secret,
            timeout=max(1, math.ceil(timeout)),
            logger=private_sdk_logger(self._secret),
            retry_handlers=handlers,
        )

    def deliver(self, alert: Alert, delivered_at: float) -> None:
        text, blocks = slack_message(alert)
        try:
            response = self._client.send(text=text, blocks=blocks)
        except TRANSPORT_ERRORS as exc:
            # no exception chaining: the cause's text could carry the URL into a traceback
            raise DeliveryError(f"slack: {_describe(exc, self._secret)}", retryable=True) from None
        if response.status_code != 200:
            status, body = response.status_code, _scrub(str(response.body), self._secret)[:ERROR_CHARS]
            wait = _header(response.headers, "Retry-After")
            raise status_error("slack", status, f" {body}", wait, delivered_at)


class HttpWebhookSink:
    """POSTs the alert record (every Alert field plus ``delivered_at``) as JSON. 2xx is success;
    408, 429, 5xx and connection errors are retryable; other statuses are not. A 429 carries its
    ``Retry-After`` back to the alerter, as the Slack sink does. The header
    ``Idempotency-Key`` carries the alert id, so a receiver can drop a repeated post."""

    name = "webhook"

    def __init__(self, url: SecretStr, timeout: float = 10.0) -> None:
        self._secret = url.get_secret_value()
        _check_http_url(self._secret, "the webhook URL")
        self._timeout = timeout

    def deliver(self, alert: Alert, delivered_at: float) -> None:
        request = Request(
            self._secret,
            data=json.dumps(alert_record(alert, delivered_at)).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": alert.id},
        )
        try:
            urlopen(request, timeout=self._timeout).close()  # urllib raises HTTPError for all but 2xx
        except HTTPError as exc:
            exc.close()
            wait = exc.headers.get("Retry-After") if exc.headers is not None else None
            raise status_error("webhook", exc.code, "", wait, delivered_at) from None
        except TRANSPORT_ERRORS as exc:
            raise DeliveryError(f"webhook: {_describe(exc, self._secret)}", retryable=True) from None
