"""Every view of the status model against a real running pipeline, its figures moved by starting
and killing processes: ``monitorx status`` (text and ``--json``), ``monitorx health``, and the
``monitorx web`` process's ``/api/status``, ``/metrics`` and page. A worker started shows up, a
killed one disappears from status and metrics within the heartbeat TTL, a stopped feed shows
``feed up 0`` and stale accounts, and with no worker left the alerter's own alert is delivered."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.heartbeat import HEARTBEAT_TTL
from tests.helpers import free_port
from tests.pipeline import Pipeline, read_jsonl, write_config

STALE_AFTER = 3.0
MARGIN = 5.0


@pytest.fixture
def pipeline(tmp_path: Path, redis_url: str) -> Iterator[Pipeline]:
    config = write_config(
        tmp_path / "config.yaml", {"low": {"check": "low_balance"}}, stale_after=STALE_AFTER
    )
    made = Pipeline(
        tmp_path / "run",
        redis_url,
        config,
        env={"MONITORX_FEED_DOWN_AFTER": "2", "MONITORX_SELF_CHECK_SECONDS": "1"},
    )
    try:
        yield made
    finally:
        made.close()


def command(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    """``monitorx ARGS`` in a process of its own, in the pipeline's environment."""
    env = {**pipeline.procs.base_environ(), **pipeline.env()}
    return subprocess.run(
        [sys.executable, "-m", "monitorx", *args], env=env, capture_output=True, text=True, timeout=30
    )


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
    return body.decode()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(get(base + "/metrics"))
        for s in family.samples
    }


def up(samples: dict[Any, float], role: str) -> float:
    return samples.get(("monitorx_processes_up", (("role", role),)), -1.0)


def feed_up(samples: dict[Any, float]) -> float:
    return samples.get(("monitorx_feed_up", (("feed", "galio"),)), -1.0)


def api(base: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(get(base + "/api/status"))
    return data


def workers_in(data: dict[str, Any]) -> set[str]:
    return {
        p["heartbeat"]["name"] for p in data["processes"] if p["heartbeat"]["role"] == "worker" and p["fresh"]
    }


def test_views_follow_processes_started_and_killed(pipeline: Pipeline) -> None:
    pipeline.start_core(workers=2)
    pipeline.start_simulator("--scenario", "steady", "--hz", "10")
    port = free_port()
    web = pipeline.procs.python("web", "monitorx", ["web", "--port", str(port)], env=pipeline.env())
    pipeline.wait(lambda: "serving on" in pipeline.procs.stderr(web), 20, "the web process to serve")
    base = f"http://127.0.0.1:{port}"

    def all_up() -> bool:
        m = scrape(base)
        return all(
            up(m, r) == n for r, n in (("ingestor", 1), ("dispatcher", 1), ("worker", 2), ("alerter", 1))
        )

    pipeline.wait(all_up, 30, "every process up in /metrics")
    pipeline.wait(lambda: feed_up(scrape(base)) == 1, 20, "feed up 1")
    data = pipeline.wait(lambda: (d := api(base))["accounts"] and d, 20, "accounts in /api/status")
    assert not any(a["stale"] for a in data["accounts"])
    assert command(pipeline, "health", "--role", "worker").returncode == 0

    third = pipeline.start_worker("views-worker-3")
    pipeline.wait(lambda: up(scrape(base), "worker") == 3, 20, "a third worker in /metrics")
    assert third.name in workers_in(api(base))

    killed = pipeline.workers[0]
    pipeline.expect_exit([killed])
    killed.proc.send_signal(signal.SIGKILL)
    pipeline.wait(
        lambda: up(scrape(base), "worker") == 2,
        HEARTBEAT_TTL + MARGIN,
        "the killed worker gone from /metrics",
    )
    assert killed.name not in workers_in(api(base))
    status = json.loads(command(pipeline, "status", "--json").stdout)
    assert killed.name not in workers_in(status) and len(workers_in(status)) == 2
    assert killed.name not in get(base + "/")

    assert pipeline.simulator is not None
    pipeline.expect_exit([pipeline.simulator])
    pipeline.simulator.proc.send_signal(signal.SIGKILL)
    pipeline.wait(lambda: feed_up(scrape(base)) == 0, 20, "feed up 0 once the feed stopped")
    stale = pipeline.wait(
        lambda: [a["account"] for a in api(base)["accounts"] if a["stale"]],
        20,
        "stale accounts in /api/status",
    )
    assert {a["account"] for a in data["accounts"]} <= set(stale)
    text = command(pipeline, "status")
    assert text.returncode == 1 and "account(s) stale" in text.stdout and "feed galio down" in text.stdout
    assert "STALE" in get(base + "/")
    ages = scrape(base)
    assert all(ages[("monitorx_account_data_age_seconds", (("account", a),))] > STALE_AFTER for a in stale)

    rest = [w for w in pipeline.workers if w is not killed]
    pipeline.expect_exit(rest)
    for worker in rest:
        worker.proc.send_signal(signal.SIGKILL)
    pipeline.wait(lambda: up(scrape(base), "worker") == 0, HEARTBEAT_TTL + MARGIN, "no worker in /metrics")
    assert command(pipeline, "health", "--role", "worker").returncode == 1
    assert "no worker running" in command(pipeline, "status").stdout

    def self_alert() -> list[dict[str, Any]]:
        found = read_jsonl(pipeline.jsonl) if pipeline.jsonl.exists() else []
        return [a for a in found if a["check"] == "process_missing" and a["state"] == "firing"]

    (alert,) = pipeline.wait(self_alert, 20, "the alerter's own alert that no worker runs")
    assert "no worker running" in alert["text"]
