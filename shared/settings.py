"""Typed settings of each process, read from the environment and ``.env``.

Each process builds exactly one settings object in its ``main()``. Every field is read from
``MONITORX_<FIELD>``; a few also accept the prototype's legacy names (``WS_URI``, ``USERNAME``,
``PASSWORD``, ``SLACK_WEBHOOK_URL``) as fallbacks: the prefixed name always wins. Defaults are
documented here, once, next to each field.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, AnyUrl, Field, RedisDsn, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.canary import CANARY_EVERY
from shared.keys import DEFAULT_PREFIX, Keys


class CommonSettings(BaseSettings):
    """What every process needs: Redis, the key prefix, the configuration file and logging."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    redis_url: RedisDsn = Field(
        default=RedisDsn("redis://127.0.0.1:6379/0"), validation_alias="MONITORX_REDIS_URL"
    )
    """Redis holding the streams, the queue and all state. Default: local Redis, database 0."""
    prefix: str = Field(default=DEFAULT_PREFIX, validation_alias="MONITORX_PREFIX")
    """Prefix of every MonitorX key (default ``mx:``)."""
    config: Path | None = Field(default=None, validation_alias="MONITORX_CONFIG")
    """Checks configuration: legacy ``features.json`` or native YAML. None: the built-in demo config."""
    log_level: str = Field(default="INFO", validation_alias="MONITORX_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field(default="text", validation_alias="MONITORX_LOG_FORMAT")

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)


class IngestSettings(CommonSettings):
    """The Galio ingestor."""

    galio_uri: AnyUrl = Field(
        default=AnyUrl("ws://127.0.0.1:8765"), validation_alias=AliasChoices("MONITORX_GALIO_URI", "WS_URI")
    )
    """Galio WebSocket endpoint (ws:// or wss://)."""
    galio_username: str | None = Field(default=None, validation_alias="MONITORX_GALIO_USERNAME")
    galio_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MONITORX_GALIO_PASSWORD", "PASSWORD")
    )
    """With a username, sent as the first frame ``{"username": ..., "password": ...}``."""
    ping_interval: float | None = Field(default=None, validation_alias="MONITORX_PING_INTERVAL")
    """WebSocket keepalive pings in seconds; None (default) sends none, as Galio may not answer."""
    max_frame_bytes: int = Field(default=16 * 2**20, validation_alias="MONITORX_MAX_FRAME_BYTES")
    """Largest frame accepted (default 16 MiB; websockets' own default of 1 MiB is too small)."""
    silence_timeout: float = Field(default=30.0, gt=0, validation_alias="MONITORX_SILENCE_TIMEOUT")
    """Reconnect when connected but no frame arrived for this many seconds (default 30)."""
    backoff_min: float = Field(default=0.5, gt=0, validation_alias="MONITORX_BACKOFF_MIN")
    backoff_max: float = Field(default=30.0, gt=0, validation_alias="MONITORX_BACKOFF_MAX")
    """Reconnect delay grows from backoff_min to backoff_max (default 0.5 s to 30 s), jittered."""
    stable_after: float = Field(default=10.0, ge=0, validation_alias="MONITORX_STABLE_AFTER")
    """A session counts as healthy, resetting the backoff, once it delivered a frame and lasted
    this long (default 10 s)."""
    stream_maxlen: int = Field(default=100_000, gt=0, validation_alias="MONITORX_STREAM_MAXLEN")
    """Snapshot stream length kept for entries every consumer group has already read."""
    record: Path | None = Field(default=None, validation_alias="MONITORX_RECORD")
    """Append every raw frame to this JSONL file (``--record``)."""
    feed_name: str = Field(
        default="galio", pattern=r"^[A-Za-z0-9_.-]+$", validation_alias="MONITORX_FEED_NAME"
    )
    """Name of the feed in its ``feed_down`` alerts and its status hash ``{p}feed:{name}``
    (default ``galio``; letters, digits, ``_``, ``.``, ``-``)."""
    feed_down_after: float | None = Field(default=None, gt=0, validation_alias="MONITORX_FEED_DOWN_AFTER")
    """Seconds without any frame after which the ``feed_down`` alert fires (default None: the
    ``silence_timeout``, so a dead feed is reported within the watchdog interval)."""
    canary_seconds: float = Field(
        default=CANARY_EVERY, ge=0, allow_inf_nan=False, validation_alias="MONITORX_CANARY_SECONDS"
    )
    """Seconds between two dead-man's switch canaries (default ``shared.canary.CANARY_EVERY``);
    0 sends none."""

    @property
    def feed_down_seconds(self) -> float:
        """The effective ``feed_down_after``."""
        return self.silence_timeout if self.feed_down_after is None else self.feed_down_after

    @field_validator("galio_uri")
    @classmethod
    def _websocket_scheme(cls, uri: AnyUrl) -> AnyUrl:
        if uri.scheme not in {"ws", "wss"}:
            raise ValueError(f"must be a ws:// or wss:// URL, not {uri.scheme}://")
        return uri

    @model_validator(mode="after")
    def _legacy_username(self) -> IngestSettings:
        # USERNAME is set by many operating systems, so the legacy name only counts when the
        # password is configured too (a username alone sends no auth frame in any case).
        if self.galio_username is None and self.galio_password is not None and os.environ.get("USERNAME"):
            object.__setattr__(self, "galio_username", os.environ["USERNAME"])
        return self


class DispatchSettings(CommonSettings):
    """The dispatcher."""

    consumer: str = Field(
        default_factory=lambda: f"dispatch-{socket.gethostname()}", validation_alias="MONITORX_CONSUMER"
    )
    """Consumer name in the ``dispatch`` group, stable across restarts (default: one per host) so a
    restarted dispatcher finds its own pending entries at once."""
    tick_seconds: float = Field(default=5.0, gt=0, validation_alias="MONITORX_TICK_SECONDS")
    """How often time-driven checks (stale data, schedules) are enqueued (default 5 s)."""
    claim_idle_ms: int = Field(default=30_000, gt=0, validation_alias="MONITORX_CLAIM_IDLE_MS")
    """Pending stream entries idle this long are reclaimed from a dead dispatcher (default 30 s)."""
    batch: int = Field(default=500, gt=0, validation_alias="MONITORX_BATCH")
    job_timeout: int = Field(default=30, gt=0, validation_alias="MONITORX_JOB_TIMEOUT")
    """Seconds a check job may run before it is stopped and reported as check_error (default 30)."""
    result_ttl: int = Field(default=0, ge=0, validation_alias="MONITORX_RESULT_TTL")
    """Seconds a finished job is kept (default 0: deleted at once; the benchmark keeps them to
    read their enqueue and start times)."""


class WorkerSettings(CommonSettings):
    """An RQ worker running checks."""

    worker_class: Literal["simple", "fork"] = Field(
        default="simple", validation_alias="MONITORX_WORKER_CLASS"
    )
    """``simple`` (default; runs jobs in-process, measured faster: see README) or ``fork``."""
    name: str | None = Field(default=None, validation_alias="MONITORX_WORKER_NAME")


class AlertSettings(CommonSettings):
    """The alerter and its sinks."""

    consumer: str = Field(
        default_factory=lambda: f"alert-{socket.gethostname()}", validation_alias="MONITORX_CONSUMER"
    )
    """Consumer name in the ``alert`` group, stable across restarts (default: one per host)."""
    console: bool = Field(default=False, validation_alias="MONITORX_CONSOLE")
    """Print each alert on standard output."""
    alerts_jsonl: Path | None = Field(default=None, validation_alias="MONITORX_ALERTS_JSONL")
    """Append every delivered alert to this file, one JSON object per line."""
    slack_webhook_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MONITORX_SLACK_WEBHOOK_URL", "SLACK_WEBHOOK_URL")
    )
    """Slack incoming webhook (a secret: never logged)."""
    webhook_url: SecretStr | None = Field(default=None, validation_alias="MONITORX_WEBHOOK_URL")
    """Generic HTTP webhook receiving each alert as a JSON POST."""
    retry_for: float = Field(default=3600.0, gt=0, validation_alias="MONITORX_RETRY_FOR")
    """Seconds after its emission an alert is still retried after a retryable failure (timeout,
    connection error, 408, 429, 5xx); a failure past that age, or a permanent one (400, 401, 403,
    404, 410, a bad URL...), sends it to the dead-letter stream (default 3600: an hour)."""
    retry_idle_ms: int = Field(default=5_000, gt=0, validation_alias="MONITORX_RETRY_IDLE_MS")
    """First rest of a sink after a retryable failure, and the idle time after which the pending
    alerts of a dead alerter are taken over (default 5 s)."""
    retry_max_ms: int = Field(default=30_000, gt=0, validation_alias="MONITORX_RETRY_MAX_MS")
    """Longest rest of a sink: from retry_idle_ms the rest doubles per consecutive failure up to
    this, jittered (default 30 s). A 429 rests the sink for its Retry-After instead, however long."""
    http_timeout: float = Field(default=10.0, gt=0, validation_alias="MONITORX_HTTP_TIMEOUT")
    sent_ttl: int = Field(default=7 * 86400, gt=0, validation_alias="MONITORX_SENT_TTL")
    """Seconds a delivery marker is kept (default 7 days)."""
    deadman_url: SecretStr | None = Field(default=None, validation_alias="MONITORX_DEADMAN_URL")
    """The dead-man's switch: an http(s) URL to GET at each canary arrival (``alerter.deadman``);
    a secret (such URLs carry a token): never logged. None (default): no ping."""
    self_check_seconds: float = Field(default=10.0, ge=0, validation_alias="MONITORX_SELF_CHECK_SECONDS")
    """Seconds between two looks of the alerts about MonitorX itself (alerter.selfcheck: no
    ingestor, dispatcher or worker running, a group lagging, dead letters waiting); 0 turns them
    off (default 10)."""

    @field_validator("deadman_url")
    @classmethod
    def _http_url(cls, url: SecretStr | None) -> SecretStr | None:
        """http(s) only (urllib would also open ``file://``); the error never echoes the URL. A
        blank one (``MONITORX_DEADMAN_URL=`` in a ``.env``) is none."""
        if url is not None and not url.get_secret_value().strip():
            return None
        parts = urlsplit(url.get_secret_value()) if url is not None else None
        if parts is not None and (parts.scheme not in {"http", "https"} or not parts.netloc):
            raise ValueError("must be an http:// or https:// URL")
        return url


class SilenceSettings(CommonSettings):
    """``monitorx silence``."""

    silence_max_hours: float = Field(
        default=24.0, gt=0, allow_inf_nan=False, validation_alias="MONITORX_SILENCE_MAX_HOURS"
    )
    """Longest silence ``monitorx silence add`` accepts, in hours (default 24)."""


class WebSettings(SilenceSettings):
    """``monitorx web``: the silence limits of ``monitorx silence``, and the operator token."""

    web_token: SecretStr | None = Field(default=None, validation_alias="MONITORX_WEB_TOKEN")
    """Operator token of the web page's writes (add and expire silences), given as the form field
    ``token`` or ``Authorization: Bearer``; a secret, never logged nor shown. Default None: the
    page is read-only and every write is refused (403)."""

    @field_validator("web_token")
    @classmethod
    def _blank_is_none(cls, token: SecretStr | None) -> SecretStr | None:
        """A blank token (``MONITORX_WEB_TOKEN=`` in a ``.env``) is no token: read-only."""
        return token if token is not None and token.get_secret_value().strip() else None
