"""An invalid configuration: refused at start (exit 1, saying where and why), refused on reload
(a ``config_error`` alert, and the last good configuration keeps alerting)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from simulator.frames import binance_account
from tests.faults.harness import Expect, Pipelines, assert_clean, low_balance_config, stop_cleanly, tally
from tests.slack_standin import SlackStandin

LOW = binance_account(1)
LOW_NOW = ("--scenario", "steady", "--hz", "5", "--accounts", "2", "--no-okx", "--low-at", "0")
BAD = "version: 1\nchecks:\n  low: {check: low_balance, cooldown: -5}\n  x: {check: nope}\n"
"""Two problems: a negative cooldown and an unknown check."""
PROBLEMS = (
    r"checks\.low\.cooldown: Input should be greater than or equal to 0",
    r"checks\.x\.check: unknown check 'nope'",
)


def test_invalid_configuration_at_start_exits_1_naming_file_field_and_reason(
    pipelines: Pipelines, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    pipeline = pipelines(bad)
    children = [pipeline.start_dispatcher(), pipeline.start_worker("refusing-worker")]
    pipeline.expect_exit(children)
    for child in children:
        assert child.proc.wait(timeout=30) == 1, pipeline.procs.output(child)
        said = pipeline.procs.stderr(child)
        assert f"invalid configuration {bad}:" in said, said
        for problem in PROBLEMS:
            assert re.search(rf"^  {re.escape(str(bad))}: {problem}", said, re.MULTILINE), said
        assert "Traceback" not in said


def test_invalid_configuration_on_reload_alerts_and_the_old_one_keeps_alerting(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    config = low_balance_config(tmp_path / "c.yaml")
    pipeline = pipelines(config, slack=slack)
    pipeline.start_core(workers=2)
    config.write_text(BAD)
    for child in [pipeline.dispatcher, *pipeline.workers]:
        assert child is not None
        child.proc.send_signal(signal.SIGHUP)
    [refused] = pipeline.wait(
        lambda: [a for a in pipeline.alerts() if a["check"] == "config_error"], 20, "the config_error alert"
    )
    # the breach starts after the refusal: only the old configuration can see it
    pipeline.start_simulator(*LOW_NOW)
    pipeline.wait(lambda: any(a["check"] == "low_balance" for a in pipeline.alerts()), 20, "the breach")
    pipeline.wait(lambda: pipeline.drained() and len(slack.ok) >= len(pipeline.alerts()), 15, "Slack")
    stop_cleanly(pipeline)

    # dispatcher and workers refused the same file: one alert id, delivered once
    assert_clean(tally([Expect("config_error", "*"), Expect("low_balance", LOW)], pipeline, slack))
    for problem in PROBLEMS:
        assert re.search(problem, refused["text"]), refused["text"]
    assert str(config) in refused["text"], refused["text"]
    assert pipeline.dispatcher is not None
    assert "reload refused" in pipeline.procs.stderr(pipeline.dispatcher)
