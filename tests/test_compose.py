"""docker-compose.yml, without Docker: each service's ``command`` and ``environment`` run locally as
``monitorx <command>`` (the image's entrypoint) against the Galio simulator and a test Redis loaded
with the ACL file ``monitorx acl`` writes (as the ``acl`` service does), each service connecting
as the user its ``MONITORX_REDIS_URL`` names, with the password the test gave that variable."""

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
from tests.pipeline import Pipeline, rq_info, rq_worker_count
from tests.test_acl import (  # noqa: F401  (fixtures)
    PASSWORDS,
    AclRedis,
    acl,
    acl_log,
    acl_server,
    low_balance_config,
)

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
SCALE = 3
"""Workers started, as `docker compose up --scale worker=3` does."""
DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)")
UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
REDIS_URL = re.compile(r"redis://(\w+):\$\{MONITORX_REDIS_PASSWORD_(\w+):\?[^}]+\}@redis:6379/(\d+)")
"""A service's MONITORX_REDIS_URL: its user, the password variable (required) and the database."""
PASSWORD_VARS = {f"MONITORX_REDIS_PASSWORD_{user.upper()}" for user in PASSWORDS}


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
def pipeline(tmp_path: Path, acl: AclRedis) -> Iterator[Pipeline]:  # noqa: F811
    made = Pipeline(tmp_path / "run", acl.url("inspector"), low_balance_config(tmp_path / "config.yaml"))
    yield made
    made.close()


def passes(argv: list[str], env: dict[str, str]) -> bool:
    """Whether a healthcheck command exits 0."""
    return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode == 0


def monitorx_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The long-running MonitorX services (not Redis, not the one-shots ``acl`` and ``operator``)."""
    return {name: spec for name, spec in services.items() if name != "redis" and spec["restart"] != "no"}


def local_url(compose_url: str, acl: AclRedis) -> str:  # noqa: F811
    """A service's MONITORX_REDIS_URL pointed at the test Redis, with the test's password."""
    found = REDIS_URL.fullmatch(compose_url)
    assert found is not None, compose_url
    user, variable, db = found.groups()
    assert variable == user.upper(), compose_url
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{acl.port}/{db}"


def test_compose_file(services: dict[str, dict[str, Any]]) -> None:
    assert 'ENTRYPOINT ["monitorx"]' in DOCKERFILE.read_text(), "commands are run as `monitorx <command>`"
    mine = monitorx_services(services)
    assert sorted(mine) == ["alerter", "dispatcher", "ingestor", "web", "worker"]
    assert sorted(services) == sorted([*mine, "redis", "acl", "operator"])
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
        user = REDIS_URL.fullmatch(env["MONITORX_REDIS_URL"])
        assert user is not None and user.group(1) == name, (name, env["MONITORX_REDIS_URL"])
        assert {k: env[k] for k in PASSWORD_VARS} == dict.fromkeys(PASSWORD_VARS, ""), name  # others blank
        assert seconds(spec["healthcheck"]["interval"]) <= 15 and spec["mem_limit"], name
        assert spec.get("ports", []) == (["8080:8080"] if name == "web" else []), name  # one published port
    operator = services["operator"]
    assert operator["profiles"] == ["ops"] and operator["command"][0] in COMMANDS
    found = REDIS_URL.fullmatch(operator["environment"]["MONITORX_REDIS_URL"])
    assert found is not None and found.group(1) == "operator"


def test_redis_loads_the_acl_file_the_acl_service_writes_first(services: dict[str, dict[str, Any]]) -> None:
    acl_service, redis = services["acl"], services["redis"]
    assert acl_service["command"][:2] == ["acl", "--output"] and acl_service["network_mode"] == "none"
    assert acl_service["restart"] == "no" and "depends_on" not in acl_service
    assert {k: v for k, v in acl_service["environment"].items() if k in PASSWORD_VARS} == {
        v: f"${{{v}:?set {v} in .env (see .env.example)}}" for v in PASSWORD_VARS
    }
    written = Path(acl_service["command"][2])
    [volume] = [v.split(":")[0] for v in acl_service["volumes"] if v.split(":")[1] == str(written.parent)]
    assert (
        f"{volume}:/etc/redis-acl:ro" in redis["volumes"]
        and volume in yaml.safe_load(COMPOSE.read_text())["volumes"]
    )
    command = redis["command"]
    assert command[command.index("--aclfile") + 1] == f"/etc/redis-acl/{written.name}"
    assert redis["depends_on"] == {"acl": {"condition": "service_completed_successfully"}}
    assert f"install -d -o monitorx -g monitorx -m 0755 {written.parent}" in DOCKERFILE.read_text()


def test_the_redis_healthcheck_authenticates(services: dict[str, dict[str, Any]], acl: AclRedis) -> None:  # noqa: F811
    check = services["redis"]["healthcheck"]["test"]
    assert check == ["CMD", "redis-cli", "--user", "web", "-e", "ping"]
    assert services["redis"]["environment"]["REDISCLI_AUTH"].startswith("${MONITORX_REDIS_PASSWORD_WEB:?")
    # the healthcheck works with this redis-cli and the ACL file: PONG and exit 0 (and -e makes errors fail)
    argv = [check[1], "-p", str(acl.port), *check[2:]]
    env = {**os.environ, "REDISCLI_AUTH": PASSWORDS["web"]}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env)
    assert (done.returncode, done.stdout.strip()) == (0, "PONG"), done
    for wrong in (
        {**env, "REDISCLI_AUTH": PASSWORDS["worker"]},
        {k: v for k, v in env.items() if k != "REDISCLI_AUTH"},
    ):
        assert subprocess.run(argv, capture_output=True, timeout=10, env=wrong).returncode != 0
    nosuch = subprocess.run([*argv[:-1], "nosuchcommand"], capture_output=True, timeout=10, env=env)
    assert nosuch.returncode != 0


def optional(value: str, env: dict[str, str]) -> str:
    """``value`` with compose's ``${VAR:-default}`` resolved from ``env`` (the rest as it is)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1], m[2]), value)


def test_compose_services_run_locally_and_scale_workers(
    services: dict[str, dict[str, Any]],
    pipeline: Pipeline,
    acl: AclRedis,  # noqa: F811
) -> None:
    redis_url = acl.url("inspector")
    pipeline.start_simulator("--scenario", "steady", "--hz", "5", "--low-at", "0")
    local = {
        "MONITORX_CONFIG": pipeline.env()["MONITORX_CONFIG"],
        "MONITORX_GALIO_URI": pipeline.galio_uri,
        "MONITORX_ALERTS_JSONL": str(pipeline.jsonl),
        # what .env (env_file) holds in production
        "MONITORX_GALIO_USERNAME": pipeline.username,
        "MONITORX_GALIO_PASSWORD": pipeline.password,
    }
    web_port = free_port()
    started = []
    urls = {
        name: local_url(spec["environment"]["MONITORX_REDIS_URL"], acl)
        for name, spec in monitorx_services(services).items()
    }
    for name, spec in monitorx_services(services).items():
        env = {
            **{k: optional(str(v), local) for k, v in spec["environment"].items()},
            **local,
            "MONITORX_REDIS_URL": urls[name],
        }
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
        check = partial(
            passes, [*program, *test[1:]], {**os.environ, **local, "MONITORX_REDIS_URL": urls[name]}
        )
        pipeline.wait(check, 30, f"the healthcheck of {name}")

    codes = pipeline.stop([c for c in started if c.name == "ingestor"])
    codes += pipeline.stop(pipeline.procs.running())
    assert [(name, code) for name, code in codes if code != 0] == [], codes
    for child in started:  # MONITORX_LOG_FORMAT: json from the compose file: one object per line
        for line in pipeline.procs.stderr(child).splitlines():
            assert isinstance(json.loads(line), dict), (child.name, line)
    output = pipeline.procs.all_output()
    assert [pw for pw in [pipeline.password, *PASSWORDS.values()] if pw in output] == []
    assert acl_log(acl) == [], "a service was refused something it needs"


def test_compose_refuses_to_start_without_the_galio_secrets_listed_in_env_example() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    galio = {"MONITORX_GALIO_URI", "MONITORX_GALIO_USERNAME", "MONITORX_GALIO_PASSWORD"}
    assert required == galio | PASSWORD_VARS
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z_]+)=", example, re.MULTILINE))
    assert required <= listed and "openssl rand -hex" in example
    settings = "".join((REPO / p).read_text() for p in ("shared/settings.py", "monitorx/aclcmd.py"))
    assert all(f'"{name}"' in settings for name in listed if name.startswith("MONITORX_")), listed
