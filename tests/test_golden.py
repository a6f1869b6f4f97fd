"""Golden parity of the backtest: on two recordings (an hour of demo incidents with the legacy
configuration, and a nasty one), ``monitorx backtest --output jsonl`` prints exactly, byte for
byte, what the original backtest printed before the engine took it over (``tests/golden/*.jsonl``,
recorded with commit 0554c55; re-recorded when alerts gained ``labels`` and ``fingerprint``
(issue 11): with those two fields dropped, every line is still the 0554c55 output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitorx.backtest import main
from tests.golden.recordings import HOUR_CONFIG, NASTY_CONFIG, demo_hour, nasty

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def hour(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_hour(tmp_path_factory.mktemp("golden") / "hour.jsonl")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_hour_of_demo_incidents(hour: Path, capsys: pytest.CaptureFixture[str], jobs: str) -> None:
    recording = hour
    assert (
        main(
            ["--config", str(HOUR_CONFIG), "--recording", str(recording), "--output", "jsonl", "--jobs", jobs]
        )
        == 0
    )
    assert capsys.readouterr().out == (GOLDEN / "hour.jsonl").read_text(encoding="utf-8")


def test_the_nasty_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recording = nasty(tmp_path / "nasty.jsonl")
    config = tmp_path / "nasty.yaml"
    config.write_text(NASTY_CONFIG, encoding="utf-8")
    assert (
        main(["--config", str(config), "--recording", str(recording), "--output", "jsonl", "--jobs", "1"])
        == 0
    )
    assert capsys.readouterr().out == (GOLDEN / "nasty.jsonl").read_text(encoding="utf-8")
