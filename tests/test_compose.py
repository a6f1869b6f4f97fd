"""docker-compose.yml, without Docker: each service's ``command`` and ``environment`` run locally as
``monitorx <command>`` (the image's entrypoint) against a test Redis and the Galio simulator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitorx.cli import COMMANDS
from shared.settings import DispatchSettings
from simulator.frames import binance_account
from tests.helpers import free_port
from tests.pipeline import Pipeline, rq_info, rq_worker_count, write_config

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
SCALE = 3
"""Workers started, as `docker compose up --scale worker=3` does."""
DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)")
UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def seconds(duration: str | int | float) -> float:
    """A compose duration (``40s``, ``1m30s``, ``1500ms``) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = DURATION.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    return sum(float(n) * UNITS[u] for n, u in parts)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE.read_text())  # resolves the x-monitorx anchor and `<<` merges
    return dict(compose["services"])


@pytest.fixture
def pipeline(tmp_path: Path, redis_url: str) -> Iterator[Pipeline]:
    config = write_config(
        tmp_path / "config.yaml",
        {
            "low-balance": {
                "check": "low_balance",
                "accounts": ["BINANCE-*"],
                "params": {"thresholds": {"USDT": 10000, "USDC": 10000, "BNB": 3}},
            }
        },
    )
    made = Pipeline(tmp_path / "run", redis_url, config)
    yield made
    made.close()


def passes(argv: list[str], env: dict[str, str]) -> bool:
    """Whether a healthcheck command exits 0."""
    return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode == 0


def monitorx_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in services.items() if name != "redis"}


def test_compose_file(services: dict[str, dict[str, Any]], redis_url: str) -> None:
    assert 'ENTRYPOINT ["monitorx"]' in DOCKERFILE.read_text(), "commands are run as `monitorx <command>`"
    mine = monitorx_services(services)
    assert sorted(mine) == ["alerter", "dispatcher", "ingestor", "web", "worker"]
    job_timeout = DispatchSettings.model_fields["job_timeout"].default
    assert job_timeout == 30
    for name, spec in mine.items():
        command = spec["command"]
        assert isinstance(command, list) and command[0] in COMMANDS, (name, command)
        env = {k: str(v) for k, v in spec["environment"].items()}
        timeout = float(env.get("MONITORX_JOB_TIMEOUT", job_timeout))
        assert seconds(spec["stop_grace_period"]) > timeout, (name, spec["stop_grace_period"])
        assert spec["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
        mounted = {v.split(":")[1] for v in spec["volumes"]}
        assert env["MONITORX_CONFIG"] in mounted, (name, env["MONITORX_CONFIG"], mounted)
        assert env["MONITORX_REDIS_URL"].startswith("redis://redis:6379/"), name
        assert seconds(spec["healthcheck"]["interval"]) <= 15 and spec["mem_limit"], name
        assert spec.get("ports", []) == (["8080:8080"] if name == "web" else []), name  # one published port

    check = services["redis"]["healthcheck"]["test"]
    assert check == ["CMD", "redis-cli", "-e", "ping"]
    # the healthcheck command works with this redis-cli: PONG and exit 0 (and -e makes errors fail)
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    done = subprocess.run([*check[1:2], "-p", port, *check[2:]], capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stdout.strip()) == (0, "PONG"), done
    wrong = subprocess.run([check[1], "-p", port, "-e", "nosuchcommand"], capture_output=True, timeout=10)
    assert wrong.returncode != 0


def test_compose_services_run_locally_and_scale_workers(
    services: dict[str, dict[str, Any]], pipeline: Pipeline, redis_url: str
) -> None:
    pipeline.start_simulator("--scenario", "steady", "--hz", "5", "--low-at", "0")
    local = {
        "MONITORX_REDIS_URL": redis_url,
        "MONITORX_CONFIG": pipeline.env()["MONITORX_CONFIG"],
        "MONITORX_GALIO_URI": pipeline.galio_uri,
        "MONITORX_ALERTS_JSONL": str(pipeline.jsonl),
        # what .env (env_file) holds in production
        "MONITORX_GALIO_USERNAME": pipeline.username,
        "MONITORX_GALIO_PASSWORD": pipeline.password,
    }
    web_port = free_port()
    started = []
    for name, spec in monitorx_services(services).items():
        env = {**{k: str(v) for k, v in spec["environment"].items()}, **local}
        command = [str(web_port) if part == "8080" else part for part in spec["command"]]
        for _ in range(SCALE if name == "worker" else 1):
            started.append(pipeline.procs.start(name, [sys.executable, "-m", "monitorx", *command], env=env))

    pipeline.wait(lambda: rq_worker_count(redis_url) == SCALE, 30, f"{SCALE} workers")
    [alert] = pipeline.wait(lambda: pipeline.alerts(), 30, "an alert in the JSONL file")
    info = rq_info(redis_url)
    assert re.search(rf"^{SCALE} workers, 1 queues", info, re.MULTILINE), info
    assert alert["check"] == "low_balance" and alert["account"] == binance_account(1)
    for name, spec in monitorx_services(services).items():  # each healthcheck passes, run here
        test = [part.replace(":8080/", f":{web_port}/") for part in spec["healthcheck"]["test"][1:]]
        program = [sys.executable, "-m", "monitorx"] if test[0] == "monitorx" else [sys.executable]
        check = partial(passes, [*program, *test[1:]], {**os.environ, **local})
        pipeline.wait(check, 30, f"the healthcheck of {name}")

    codes = pipeline.stop([c for c in started if c.name == "ingestor"])
    codes += pipeline.stop(pipeline.procs.running())
    assert [(name, code) for name, code in codes if code != 0] == [], codes
    for child in started:  # MONITORX_LOG_FORMAT: json from the compose file: one object per line
        for line in pipeline.procs.stderr(child).splitlines():
            assert isinstance(json.loads(line), dict), (child.name, line)
    assert pipeline.password not in pipeline.procs.all_output()


def test_compose_refuses_to_start_without_the_galio_secrets_listed_in_env_example() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    assert required == {"MONITORX_GALIO_URI", "MONITORX_GALIO_USERNAME", "MONITORX_GALIO_PASSWORD"}
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z_]+)=", example, re.MULTILINE))
    assert required <= listed
    settings = (REPO / "shared" / "settings.py").read_text()
    assert all(f'"{name}"' in settings for name in listed if name.startswith("MONITORX_")), listed
