"""Labelled metrics (issue 12, "Prometheus metrics"): ``shared.metrics`` on a real redis-server,
each producer with its real code (the ingestor's flush, the worker's job, ``engine.alerts.emit``,
the receivers against real HTTP servers on loopback), the whole pipeline as processes scraped
over HTTP by ``monitorx web``, and the Grafana dashboard and Prometheus example in ``deploy/``
against what ``/metrics`` really exposes."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import yaml
from pydantic import SecretStr

from alerter.notify import Notification
from alerter.receivers import JsonlReceiver, WebhookReceiver
from alerter.service import REASONS, failure_reason
from alerter.sinks import DeliveryError
from alerter.slackbot import SlackBotReceiver
from engine.alerts import emit
from engine.plan import Plan, build, builtin_config
from engine.registry import Registry
from ingestor.ingest import Ingestor
from ingestor.normalize import normalize_account
from monitorx.metrics import HISTOGRAMS, LABELLED, status_metrics
from monitorx.status import read_status
from shared import metrics as M
from shared.config import parse
from shared.keys import Keys
from shared.redisio import Publisher, connect
from tests.faults.harness import low_balance_config
from tests.helpers import free_port
from tests.pipeline import Pipeline
from tests.slack_standin import Reply, SlackStandin
from tests.test_delivery_stages import alert
from tests.test_isolation import BOOM
from tests.test_web import samples, serve
from workers.context import CURRENT, Context
from workers.jobs import run_check

KEYS = Keys()
ACC = "BINANCE-AAZ01-UM"
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
LOW_NOW = ("--scenario", "steady", "--hz", "5", "--accounts", "2", "--no-okx", "--low-at", "0")
"""Two Binance accounts, account 1 below the legacy USDT threshold from the start."""
Key = tuple[str, tuple[tuple[str, str], ...]]


def stored(r: redis_lib.Redis) -> dict[Key, float]:
    """Every series of ``Keys.metrics``: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in M.parse(r.hgetall(KEYS.metrics))}


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


# -- shared.metrics -------------------------------------------------------------------------------


def test_count_and_observe_queue_on_the_callers_pipeline_and_parse_reads_them_back(
    r: redis_lib.Redis,
) -> None:
    pipe = r.pipeline(transaction=False)
    M.count(pipe, KEYS, "x_total", {"check": "low_balance"})
    M.count(pipe, KEYS, "x_total", {"check": "low_balance"}, 4)
    M.count(pipe, KEYS, "x_total", {"state": "firing", "check": "delta"})
    M.observe(pipe, KEYS, "h_seconds", {"check": "a"}, 0.3, (0.1, 0.5, 1.0))
    assert r.exists(KEYS.metrics) == 0, "nothing is written before the caller sends its pipeline"
    pipe.execute()
    assert set(r.hgetall(KEYS.metrics)) == {
        'x_total{"check":"low_balance"}',
        'x_total{"check":"delta","state":"firing"}',
        'h_seconds_bucket{"check":"a","le":"0.5"}',
        'h_seconds_sum{"check":"a"}',
        'h_seconds_count{"check":"a"}',
    }
    found = stored(r)
    assert found[key("x_total", check="low_balance")] == 5
    assert found[key("x_total", check="delta", state="firing")] == 1
    assert found[key("h_seconds_sum", check="a")] == pytest.approx(0.3)


def test_parse_skips_what_it_cannot_read(r: redis_lib.Redis) -> None:
    r.hset(KEYS.metrics, mapping={"junk": "1", 'bad{"x":': "1", 'v{"a":"b"}': "many", '{"a":"b"}': "1"})
    M.count(r, KEYS, "ok_total", {})
    assert stored(r) == {key("ok_total"): 1}


def test_a_value_on_a_bound_falls_in_that_bucket_and_the_reader_cumulates(r: redis_lib.Redis) -> None:
    bounds = (0.1, 0.5, 1.0)
    pipe = r.pipeline(transaction=False)
    for seconds in (0.0, 0.1, 0.1000001, 1.0, 1.5):
        M.observe(pipe, KEYS, "h_seconds", {"check": "a"}, seconds, bounds)
    M.observe(pipe, KEYS, "h_seconds", {"check": "b"}, 0.05, bounds)
    pipe.execute()
    raw = stored(r)
    per_bucket = {
        le: raw.get(key("h_seconds_bucket", check="a", le=le)) for le in ("0.1", "0.5", "1.0", "+Inf")
    }
    assert per_bucket == {"0.1": 2, "0.5": 1, "1.0": 1, "+Inf": 1}, "stored per bucket, not cumulated"
    a, b = M.histograms(M.parse(r.hgetall(KEYS.metrics)), "h_seconds", bounds)
    assert (a.labels, a.buckets, a.count) == (
        {"check": "a"},
        [("0.1", 2), ("0.5", 3), ("1.0", 4), ("+Inf", 5)],
        5,
    )
    assert a.sum == pytest.approx(2.7000001)
    assert b.buckets == [("0.1", 1), ("0.5", 1), ("1.0", 1), ("+Inf", 1)], "every bound, observed or not"


# -- producers ------------------------------------------------------------------------------------


def test_the_ingestor_counts_frames_and_malformed_frames_of_its_feed(
    redis_url: str, r: redis_lib.Redis
) -> None:
    ingestor = Ingestor(connect(redis_url), KEYS, stream_maxlen=1000, feed="galio-b")
    good = json.dumps({"pos": {ACC: {"USDTwalletBalance": "12000.5"}}})
    for i, text in enumerate((good, "not json", good)):
        ingestor.accept(text, 1000.0 + i)
    assert ingestor.flush()
    found = stored(r)
    assert found[key(M.FEED_FRAMES, feed="galio-b")] == 3
    assert found[key(M.FEED_MALFORMED, feed="galio-b")] == 1


def boom_plan() -> Plan:
    text = """
checks:
  low: {check: low_balance, accounts: ["*"], params: {thresholds: {USDT: 1000}}, cooldown: 300}
  boom: {check: boom, accounts: ["*"]}
"""
    return build(parse(text, "t.yaml"), Registry([*Registry.discover(plugins=False).specs.values(), BOOM]))


@pytest.fixture
def job_context(redis_url: str) -> Iterator[None]:
    """What a worker sets around a job (``workers.context.CURRENT``), for calling jobs directly."""
    token = CURRENT.set(Context(connect(redis_url), KEYS, boom_plan()))
    yield
    CURRENT.reset(token)


def test_each_check_run_is_counted_once_with_its_write_or_on_its_own(
    r: redis_lib.Redis, job_context: None
) -> None:
    publish = Publisher(r, KEYS).publish
    publish([normalize_account(ACC, {"USDTwalletBalance": 5000}, 10.0)])
    outcomes = [run_check("low", ACC, at=20.0)]  # healthy and at rest: nothing written
    publish([normalize_account(ACC, {"USDTwalletBalance": 50}, 30.0)])
    outcomes.append(run_check("low", ACC))  # fires: written with its alert
    outcomes += [run_check("boom", ACC), run_check("boom", ACC, at=40.0)]
    assert outcomes[:2] == ["unchanged", "applied"], "both paths taken"
    found = stored(r)
    for check, runs in (("low_balance", 2), ("boom", 2)):
        assert found[key(M.CHECK_EVALUATIONS, check=check)] == runs
        assert found[key(f"{M.CHECK_DURATION}_count", check=check)] == runs
        assert 0 < found[key(f"{M.CHECK_DURATION}_sum", check=check)] < 5
    assert found[key(M.CHECK_ERRORS, check="boom")] == 2
    assert key(M.CHECK_ERRORS, check="low_balance") not in found
    assert found[key(M.ALERTS, check="low_balance", state="firing")] == 1
    assert found[key(M.ALERTS, check="check_error", state="firing")] == 1, "fires once, then cooldown"


def test_emit_counts_alerts_per_check_and_state(r: redis_lib.Redis) -> None:
    pipe = r.pipeline(transaction=True)
    emit(pipe, KEYS, [alert("A", "feed_down"), alert("B", "feed_down"), alert("A", "feed_down", "resolved")])
    pipe.execute()
    found = stored(r)
    assert found[key(M.ALERTS, check="feed_down", state="firing")] == 2
    assert found[key(M.ALERTS, check="feed_down", state="resolved")] == 1


# -- failure reasons, from real failures ----------------------------------------------------------


def note() -> Notification:
    a = alert(ACC, "low_balance")
    return Notification("g", "r", {}, (a,), (a,))


def reason_of(send: Any) -> str:
    with pytest.raises(DeliveryError) as caught:
        send(note(), None, time.time())
    found = failure_reason(caught.value)
    assert found in REASONS
    return found


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(500, "boom"), "http_5xx"),
        (Reply(404, "no such hook"), "http_4xx"),
        (Reply(429), "rate_limited"),
    ],
)
def test_an_http_status_is_its_reason(reply: Reply, reason: str) -> None:
    with SlackStandin() as hook:
        hook.default = reply
        assert reason_of(WebhookReceiver(SecretStr(hook.url("/hooks/x")), 2.0).send) == reason


def test_no_answer_is_a_connection_or_a_timeout() -> None:
    closed = WebhookReceiver(SecretStr(f"http://127.0.0.1:{free_port()}/hook"), 2.0)
    assert reason_of(closed.send) == "connection"
    with socket.socket() as mute:  # accepts connections (the backlog) and never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        url = f"http://127.0.0.1:{mute.getsockname()[1]}/hook"
        assert reason_of(WebhookReceiver(SecretStr(url), 0.5).send) == "timeout"


def test_a_slack_refusal_is_rejected_and_anything_else_other(tmp_path: Path) -> None:
    with SlackStandin() as slack:
        bot = SlackBotReceiver(
            "bot", SecretStr("xoxb-not-the-token"), "alerts", slack.api_url(), write_interval=0
        )
        assert reason_of(bot.send) == "rejected"
    (tmp_path / "file").write_text("")
    assert reason_of(JsonlReceiver(tmp_path / "file" / "alerts.jsonl").send) == "other"
    assert failure_reason(DeliveryError("a receiver's bug", True)) == "other"


# -- the pipeline, scraped ------------------------------------------------------------------------


def scrape(base: str) -> dict[Key, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        return samples(resp.read().decode())


EXPECTED = (
    key("monitorx_feed_frames_total", feed="galio"),
    key("monitorx_check_evaluations_total", check="low_balance"),
    key("monitorx_check_evaluation_duration_seconds_count", check="low_balance"),
    key("monitorx_alerts_total", check="low_balance", state="firing"),
    key("monitorx_notifications_total", receiver="slack"),
    key("monitorx_notification_latency_seconds_count", receiver="slack"),
    key("monitorx_notifications_failed_total", receiver="slack", reason="http_5xx"),
    key("monitorx_notifications_failed_total", receiver="webhook", reason="http_4xx"),
    key("monitorx_dead_letters_written_total", receiver="webhook"),
)


def complete(base: str) -> dict[Key, float] | None:
    """The samples of one scrape once every EXPECTED series is above 0, else None."""
    found = scrape(base)
    return found if all(found.get(k, 0) > 0 for k in EXPECTED) else None


def test_a_running_pipeline_exposes_its_labelled_metrics(tmp_path: Path, redis_url: str) -> None:
    found: dict[Key, float] = {}
    with SlackStandin() as slack, SlackStandin() as hook:
        slack.script(*[Reply(500, "internal_error")] * 3)  # slack-sdk retries a 500 twice itself
        hook.default = Reply(404, "no such hook")
        env = {"MONITORX_WEBHOOK_URL": hook.url("/hooks/metrics"), "MONITORX_RETRY_IDLE_MS": "200"}
        config = low_balance_config(tmp_path / "c.yaml")
        pipeline = Pipeline(tmp_path / "run", redis_url, config, slack=slack, env=env)
        try:
            pipeline.start_simulator(*LOW_NOW)
            pipeline.start_core(workers=1)
            for web in serve(redis_url):
                found = pipeline.wait(lambda: complete(web), 45, "every labelled metric on /metrics")  # noqa: B023
        finally:
            pipeline.close()
    assert found[key("monitorx_check_evaluations_total", check="low_balance")] >= found[EXPECTED[2]]
    latency = [v for (name, labels), v in found.items() if name.startswith("monitorx_notification_latency")]
    assert latency and found[key("monitorx_notification_latency_seconds_sum", receiver="slack")] > 0
    inf = key("monitorx_notification_latency_seconds_bucket", receiver="slack", le="+Inf")
    assert found[inf] == found[key("monitorx_notification_latency_seconds_count", receiver="slack")]
    assert found[key("monitorx_dead_letters_written_total", receiver="webhook")] == 1


# -- deploy/ --------------------------------------------------------------------------------------


def exposed(r: redis_lib.Redis) -> set[str]:
    """Every sample name ``/metrics`` can show, from the families it yields (on an empty Redis:
    each family is there before its first sample)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    status = read_status(r, KEYS, builtin_config(), time.time())
    return {f.name + s for f in status_metrics(status) for s in suffixes.get(f.type, ("",))}


def expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every Prometheus expression of the dashboard: panel targets (rows included) and variables."""
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack += panel.get("panels", [])
        yield from (t["expr"] for t in panel.get("targets", []))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            yield var["query"]["query"]


def test_the_grafana_dashboard_uses_only_exposed_metrics_and_shows_each_topic(r: redis_lib.Redis) -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    used = {name for expr in expressions(dashboard) for name in re.findall(r"\bmonitorx_\w+", expr)}
    assert used - exposed(r) == set(), "the dashboard asks for metrics /metrics does not expose"
    topics = {
        "monitorx_processes_up", "monitorx_feed_up", "monitorx_account_data_age_seconds",
        "monitorx_feed_frames_total", "monitorx_check_evaluations_total",
        "monitorx_check_evaluation_errors_total", "monitorx_check_evaluation_duration_seconds_bucket",
        "monitorx_alerts_total", "monitorx_notifications_total", "monitorx_notifications_failed_total",
        "monitorx_notification_latency_seconds_bucket", "monitorx_dead_letters", "monitorx_queue_jobs",
        "monitorx_stream_lag_entries", "monitorx_stream_behind_seconds", "monitorx_jobs_enqueued_total",
    }  # fmt: skip
    assert topics - used == set(), "a topic of the issue has no panel"
    assert {f"monitorx_{name}" for name in LABELLED} | {f"monitorx_{h}_count" for h in HISTOGRAMS} <= exposed(
        r
    )
    [source] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["name"] == "datasource" and source["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert {json.dumps(p["datasource"]) for p in panels} == {'{"type": "prometheus", "uid": "${datasource}"}'}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert any("histogram_quantile(0.95" in e for e in expressions(dashboard))


def test_the_prometheus_example_scrapes_the_web_service_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    [target] = [t for group in job["static_configs"] for t in group["targets"]]
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text(encoding="utf-8"))
    command = compose["services"]["web"]["command"]
    assert target == f"web:{command[command.index('--port') + 1]}"
