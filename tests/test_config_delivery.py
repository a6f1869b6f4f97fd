"""The delivery sections of the native YAML (receivers, route tree, inhibit rules): the documented
example loads, every mistake is a problem at the path written, secrets are only environment
references, and files without the sections (legacy features.json too) get the defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alerter.route import build_route, match_routes
from engine.plan import build
from engine.registry import Registry
from monitorx.configcmd import to_yaml
from shared.config import (
    DEFAULT_INHIBIT_RULES,
    SLACK_API_URL,
    Config,
    ConfigError,
    Problem,
    SecretRef,
    load,
    parse,
    parse_duration,
    secret_environment,
)

EXAMPLE = """
version: 1
stale_after: 60
checks:
  low-balance:
    check: low_balance
    accounts: ["BINANCE-*"]
    params: {thresholds: {USDT: 10000, USDC: 10000, BNB: 3}}
    cooldown: 300

receivers:
  desk:                                  # the desk's channel, through a Slack app (bot token)
    slack_bot:
      token_env: SLACK_BOT_TOKEN         # the name of the variable holding the xoxb- token
      channel: C0123DESK                 # a channel id (updates need the id, not #name)
  desk-critical:
    slack_bot: {token_env: SLACK_BOT_TOKEN, channel: C0456CRIT}
  treasury:
    slack_webhook: {url_env: TREASURY_SLACK_WEBHOOK_URL}
  ops:
    webhook: {url_env: OPS_WEBHOOK_URL}
  archive:
    jsonl: {path: /var/log/monitorx/alerts.jsonl}
  stdout:
    console:

route:                                   # the root: every alert enters here
  receiver: desk
  group_by: [check]                      # one message per check, listing its accounts
  group_wait: 30s                        # wait for the rest of a storm before the first post
  group_interval: 5m                     # changes to a group are posted at most this often
  repeat_interval: 4h                    # a group still firing, unchanged, is posted again
  routes:
    - matchers: ['severity="critical"']  # critical alerts also page the critical channel...
      receiver: desk-critical
      group_wait: 0s
      continue: true                     # ...and go on to the routes below
    - matchers: ['check=~"balance_report|margin_snapshot"']
      receiver: archive                  # reports only to the archive, each its own group
      group_by: ['...']
    - matchers: ['team="treasury"']
      receiver: treasury
    - receiver: desk                     # everything else (and critical alerts) to the desk

inhibit_rules:                           # the default, written out
  - name: stale-data
    source_matchers: ['check="stale_data"']
    target_matchers: ['check!~"stale_data|check_error|config_error"']
    equal: [account]
"""


KINDS = "slack_webhook, slack_bot, webhook, jsonl, console"
CHARS = "letters, digits and _"


def problems(text: str) -> tuple[Problem, ...]:
    with pytest.raises(ConfigError) as err:
        parse(text, "x.yaml").check_problems()
    return err.value.problems


def loaded(text: str) -> Config:
    return parse(text, "x.yaml").check_problems()


# ---------------------------------------------------------------- the documented example


def test_the_documented_example_loads_and_binds() -> None:
    config = loaded(EXAMPLE)
    build(config, Registry.discover(plugins=False))
    assert {n: r.kind for n, r in config.receivers.items()} == {
        "desk": "slack_bot",
        "desk-critical": "slack_bot",
        "treasury": "slack_webhook",
        "ops": "webhook",
        "archive": "jsonl",
        "stdout": "console",
    }
    assert config.receivers["desk"].slack_bot is not None
    assert config.receivers["desk"].slack_bot.api_url == SLACK_API_URL
    assert config.inhibit_rules == DEFAULT_INHIBIT_RULES
    assert config.route is not None
    assert config.route.routes[0].continue_ is True


def test_the_documented_example_routes_as_its_comments_say() -> None:
    config = loaded(EXAMPLE)
    assert config.route is not None
    tree = build_route(config.route)

    def to(**labels: str) -> list[str]:
        return [m.receiver for m in match_routes(tree, labels)]

    assert to(check="low_balance", severity="critical") == ["desk-critical", "desk"]
    assert to(check="balance_report", severity="info") == ["archive"]
    assert to(check="delta", team="treasury") == ["treasury"]
    assert to(check="delta") == ["desk"]


def test_the_example_lists_its_secrets_in_file_order() -> None:
    assert loaded(EXAMPLE).secrets() == [
        SecretRef("SLACK_BOT_TOKEN", "receivers.desk.slack_bot.token_env"),
        SecretRef("SLACK_BOT_TOKEN", "receivers.desk-critical.slack_bot.token_env"),
        SecretRef("TREASURY_SLACK_WEBHOOK_URL", "receivers.treasury.slack_webhook.url_env"),
        SecretRef("OPS_WEBHOOK_URL", "receivers.ops.webhook.url_env"),
    ]


# ---------------------------------------------------------------- defaults


def test_a_legacy_file_keeps_todays_delivery(legacy_config: Path) -> None:
    config = load(legacy_config)
    assert (config.receivers, config.route, config.inhibit_rules) == ({}, None, ())


def test_a_yaml_without_delivery_sections_gets_the_default_route_and_rule() -> None:
    config = loaded("checks:\n  l: {check: low_balance}\n")
    assert (config.receivers, config.route) == ({}, None)
    assert config.inhibit_rules == DEFAULT_INHIBIT_RULES


def test_an_empty_inhibit_rules_list_turns_the_default_rule_off() -> None:
    text = "receivers: {a: {console: }}\nroute: {receiver: a}\ninhibit_rules: []\n"
    assert loaded(text).inhibit_rules == ()


def test_the_default_inhibit_rule_is_the_documented_one() -> None:
    (rule,) = DEFAULT_INHIBIT_RULES
    assert rule.source_matchers == ('check="stale_data"',)
    assert rule.target_matchers == ('check!~"stale_data|check_error|config_error"',)
    assert rule.equal == ("account",)


def test_a_slack_bot_may_point_at_a_stand_in() -> None:
    text = """
receivers: {s: {slack_bot: {token_env: T, channel: C1, api_url: "http://127.0.0.1:9999/api/"}}}
route: {receiver: s}
"""
    bot = loaded(text).receivers["s"].slack_bot
    assert bot is not None and bot.api_url == "http://127.0.0.1:9999/api/"


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("1w", 604800), ("1h30m", 5400),
     ("250ms", 0.25), ("0", 0), ("0s", 0), (" 2s ", 2), (45, 45), (1.5, 1.5), (0, 0)],
)  # fmt: skip
def test_durations(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(
    "written", ["", "5", "5x", "m", "1m1h", "-1s", "1.5h", -1, True, None, [1], float("inf")]
)
def test_bad_durations_are_refused(written: object) -> None:
    with pytest.raises(ValueError, match="must be a duration such as 90s"):
        parse_duration(written)


# ---------------------------------------------------------------- problems at the path written


def test_every_delivery_mistake_is_a_problem_at_its_path() -> None:
    text = """
receivers:
  bot: {slack_bot: {token_env: "1x"}}
  two: {console: , jsonl: {path: a}}
  none: {}
  typo: {slak_bot: {token_env: T}}
route:
  receiver: bot
  group_by: [check, "a-b"]
  routes:
    - matchers: ['x=~"("', 'severity="critical"']
      receiver: nope
      group_interval: 5x
      colour: red
    - routes: [{receiver: ghost, group_by: ["...", account]}]
      group_by: [check, account, check]
inhibit_rules:
  - source_matchers: []
    target_matchers: [a=b]
    equal: [account, "x y"]
  - target_matchers: [a=b]
"""
    found = {p.path: p.reason for p in problems(text)}
    assert found == {
        "receivers.bot.slack_bot.token_env": f"must name an environment variable ({CHARS}), got '1x'",
        "receivers.bot.slack_bot.channel": "Field required",
        "receivers.two": (f"a receiver is exactly one of {KINDS} (got: console, jsonl)"),
        "receivers.none": (f"a receiver is exactly one of {KINDS} (got: nothing)"),
        "receivers.typo": (f"a receiver is exactly one of {KINDS} (got: slak_bot)"),
        "route.group_by.1": "invalid label name 'a-b' (letters, digits and _, not first a digit)",
        "route.routes.0.matchers.0": (
            "bad matcher 'x=~\"(\"': invalid regular expression '(': "
            "missing ), unterminated subpattern at position 0"
        ),
        "route.routes.0.group_interval": (
            "must be a duration such as 90s, 5m, 4h, 1d or 1h30m (or a number of seconds), got '5x'"
        ),
        "route.routes.0.colour": "Extra inputs are not permitted",
        "route.routes.1.routes.0.group_by": "'...' (every label) cannot be combined with other labels",
        "route.routes.1.group_by": "label 'check' is listed twice",
        "route.routes.0.receiver": "unknown receiver 'nope' (receivers: bot, two, none, typo)",
        "route.routes.1.routes.0.receiver": "unknown receiver 'ghost' (receivers: bot, two, none, typo)",
        "inhibit_rules.0.source_matchers": "needs at least one matcher (none would match every alert)",
        "inhibit_rules.0.equal.1": "invalid label name 'x y' (letters, digits and _, not first a digit)",
        "inhibit_rules.1.source_matchers": "Field required",
    }


@pytest.mark.parametrize(
    ("receiver", "field"),
    [
        ("{slack_bot: {token: xoxb-1-2, token_env: T, channel: C1}}", "slack_bot.token"),
        ("{slack_webhook: {url: 'https://hooks.slack.com/services/T/B/x'}}", "slack_webhook.url"),
        ("{webhook: {url: 'https://ops.example/hook'}}", "webhook.url"),
    ],
)
def test_a_secret_written_in_the_file_is_refused(receiver: str, field: str) -> None:
    found = problems(f"receivers: {{r: {receiver}}}\nroute: {{receiver: r}}\n")
    name = field.rsplit(".", 1)[1]
    assert (
        Problem(
            path=f"receivers.r.{field}",
            reason=f"secrets are never written in the file: put the {name} in an environment variable "
            f"and name that variable in {name}_env",
        )
        in found
    )
    assert all("xoxb" not in p.reason and "hooks.slack" not in p.reason for p in found)


def test_the_root_route_follows_alertmanagers_rules() -> None:
    text = "receivers: {a: {console: }}\nroute: {matchers: [x=1], continue: true}\n"
    assert problems(text) == (
        Problem(path="route.receiver", reason="the root route needs a receiver"),
        Problem(path="route.matchers", reason="the root route matches every alert: it takes no matchers"),
        Problem(path="route.continue", reason="the root route has no siblings to continue to"),
    )


def test_receivers_without_a_route_are_a_problem() -> None:
    assert problems("receivers: {a: {console: }}\n") == (
        Problem(path="route", reason="receivers are defined but no route sends to them"),
    )


def test_a_route_without_receivers_names_unknown_receivers() -> None:
    assert problems("route: {receiver: desk}\n") == (
        Problem(path="route.receiver", reason="unknown receiver 'desk' (receivers: none defined)"),
    )


def test_a_bad_top_level_still_checks_the_delivery_sections() -> None:
    text = "version: 2\nreceivers: {a: {console: 1}}\nroute: {receiver: b}\n"
    paths = [p.path for p in problems(text)]
    assert paths == ["version", "receivers.a.console", "route.receiver"]


def test_sections_of_the_wrong_shape_are_problems() -> None:
    text = "receivers: [a]\nroute: desk\ninhibit_rules: {a: 1}\n"
    found = {p.path: p.reason for p in problems(text)}
    assert found["receivers"] == "must be a dictionary, got ['a']"
    assert found["inhibit_rules"] == "must be a list, got {'a': 1}"
    assert found["route"].startswith("must be a dictionary")


def test_a_receiver_with_problems_still_counts_as_defined_for_the_route() -> None:
    text = "receivers: {a: {slack_bot: {token_env: T}}}\nroute: {receiver: a}\n"
    assert [p.path for p in problems(text)] == ["receivers.a.slack_bot.channel"]


# ---------------------------------------------------------------- secrets from the environment


def test_unset_secrets_are_those_missing_or_empty() -> None:
    config = loaded(EXAMPLE)
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "OPS_WEBHOOK_URL": ""}
    assert [r.env for r in config.unset_secrets(env)] == ["TREASURY_SLACK_WEBHOOK_URL", "OPS_WEBHOOK_URL"]


def test_secrets_come_from_the_environment_over_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MX_TEST_A=from-file\nMX_TEST_B=from-file\nMX_TEST_EMPTY=\n")
    monkeypatch.setenv("MX_TEST_B", "from-env")
    found = secret_environment(env_file)
    assert (found["MX_TEST_A"], found["MX_TEST_B"]) == ("from-file", "from-env")
    assert "MX_TEST_EMPTY" not in found
    assert "MX_TEST_A" not in secret_environment(tmp_path / "missing.env")


def run_check(path: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"SLACK_BOT_TOKEN", "OPS_WEBHOOK_URL"}}
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-m", "monitorx", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(root), "TREASURY_SLACK_WEBHOOK_URL": "https://x", **env},
    )


def test_config_check_names_every_unset_secret(tmp_path: Path) -> None:
    path = tmp_path / "desk.yaml"
    path.write_text(EXAMPLE)
    (tmp_path / ".env").write_text("OPS_WEBHOOK_URL=https://ops.example/hook\n")
    done = run_check(path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "delivery: 6 receivers, 5 routes, 1 inhibit rule",
        "  secret SLACK_BOT_TOKEN is not set (receivers.desk.slack_bot.token_env)",
        "  secret SLACK_BOT_TOKEN is not set (receivers.desk-critical.slack_bot.token_env)",
    ]
    done = run_check(path, tmp_path, SLACK_BOT_TOKEN="xoxb-1")
    assert "is not set" not in done.stdout
    assert "xoxb" not in done.stdout + done.stderr


def test_config_check_says_the_legacy_file_keeps_the_default_route(
    legacy_config: Path, tmp_path: Path
) -> None:
    done = run_check(legacy_config, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == (
        "delivery: default route (each alert to every sink of the settings, its own message), 0 inhibit rules"
    )


def test_config_check_lists_delivery_problems_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"receivers": {"a": {"console": None}}, "route": {"receiver": "b"}}))
    done = run_check(path, tmp_path)
    assert done.returncode == 1
    assert f"{path}: route.receiver: unknown receiver 'b' (receivers: a)" in done.stderr


# ---------------------------------------------------------------- convert keeps delivery as it was


def test_converting_a_legacy_file_keeps_its_delivery(legacy_config: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitorx", "config", "convert", str(legacy_config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    converted = parse(done.stdout, "converted.yaml").check_problems()
    assert (converted.receivers, converted.route, converted.inhibit_rules) == ({}, None, ())
    assert "inhibit_rules: [] keeps delivery as it was" in done.stdout


def test_converting_a_native_file_keeps_its_delivery() -> None:
    config = loaded(EXAMPLE)
    again = loaded(to_yaml(config))
    assert (again.receivers, again.route, again.inhibit_rules) == (
        config.receivers,
        config.route,
        config.inhibit_rules,
    )


# ---------------------------------------------------------------- labels attached to alerts


def test_every_label_mistake_is_a_problem_at_its_path() -> None:
    text = """
checks:
  low:
    check: low_balance
    labels: {team: treasury, a-b: x, n: 5, check: mine}
  delta: {check: delta, labels: [team]}
account_labels:
  "BINANCE-AAZ*": {desk: aaz, "1x": y, venue: cex}
  OKX-*: [a]
"""
    builtin = "check, instance, account, venue, severity, key"
    invalid = "(letters, digits and _, not first a digit)"
    found = {p.path: p.reason for p in problems(text)}
    assert found == {
        "account_labels.BINANCE-AAZ*.1x": f"invalid label name '1x' {invalid}",
        "account_labels.BINANCE-AAZ*.venue": (
            f"label 'venue' is set by MonitorX on every alert ({builtin}): choose another name"
        ),
        "account_labels.OKX-*": "must be a dictionary, got ['a']",
        "checks.low.labels.a-b": f"invalid label name 'a-b' {invalid}",
        "checks.low.labels.n": "must be a string, got 5",
        "checks.low.labels.check": (
            f"label 'check' is set by MonitorX on every alert ({builtin}): choose another name"
        ),
        "checks.delta.labels": "must be a dictionary, got ['team']",
    }


def test_a_bad_top_level_still_checks_every_checks_labels() -> None:
    text = "version: 2\naccount_labels: {'*': {x: 1}}\nchecks: {low: {check: low_balance, labels: {2x: a}}}\n"
    assert [p.path for p in problems(text)] == ["version", "account_labels.*.x", "checks.low.labels.2x"]


def test_labels_load_in_file_order() -> None:
    text = """
checks: {low: {check: low_balance, labels: {team: t}}}
account_labels: {'B*': {a: '1'}, '*': {a: '2'}}
"""
    config = loaded(text)
    assert config.instances[0].labels == {"team": "t"}
    assert config.account_labels == (("B*", {"a": "1"}), ("*", {"a": "2"}))
