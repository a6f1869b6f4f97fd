"""Settings: typed, validated at start, prefixed names win over the legacy fallbacks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import AlertSettings, DispatchSettings, IngestSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("WS_URI", "USERNAME", "PASSWORD", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(str(tmp_path))  # no stray .env


def test_legacy_names_are_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_URI", "wss://galio.example:9443/feed")
    monkeypatch.setenv("PASSWORD", "s3cret")
    monkeypatch.setenv("USERNAME", "desk")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.example/T/B/x")
    s = IngestSettings()
    assert str(s.galio_uri) == "wss://galio.example:9443/feed"
    assert s.galio_username == "desk" and s.galio_password is not None
    assert s.galio_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    alert = AlertSettings()
    assert alert.slack_webhook_url is not None and "hooks.example" not in repr(alert)


def test_prefixed_names_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS_URI", "ws://legacy:1")
    monkeypatch.setenv("MONITORX_GALIO_URI", "ws://new:2")
    monkeypatch.setenv("PASSWORD", "old")
    monkeypatch.setenv("MONITORX_GALIO_PASSWORD", "new")
    s = IngestSettings()
    assert s.galio_uri.host == "new"
    assert s.galio_password is not None and s.galio_password.get_secret_value() == "new"


def test_os_username_alone_sends_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERNAME", "root")  # set by the operating system, not by the desk
    assert IngestSettings().galio_username is None


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    [
        (IngestSettings, "MONITORX_GALIO_URI", "http://galio:1"),
        (DispatchSettings, "MONITORX_REDIS_URL", "not a url"),
        (DispatchSettings, "MONITORX_TICK_SECONDS", "0"),
        (AlertSettings, "MONITORX_RETRY_FOR", "zero"),
    ],
)
def test_bad_values_fail_at_start(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        cls()
