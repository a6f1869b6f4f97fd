"""Redis users per service (``monitorx acl``), against a real redis-server started with
``--aclfile`` of the generated file: the default user can do nothing, the whole pipeline runs with
each process under its own user (nothing refused: ``ACL LOG`` stays empty), an alert and a
``feed_down`` alert (forwarded by the dispatcher) are delivered, and each user is refused what it
must not do. Also the dispatcher's forwarding of feed alerts on its own, on the session's Redis.

The test Redis gets one more user, ``inspector`` (every key and command), appended to the file:
the tests read results and ``ACL LOG`` with it; no process uses it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from rq import Queue

from alerter.service import dead_letter
from engine.alerts import make_alert
from engine.checks.base import Message
from engine.plan import load_plan
from ingestor.health import FeedHealth
from monitorx.aclcmd import MIN_PASSWORD, USERS
from monitorx.procs import Supervisor, free_port
from shared import keys as K
from shared.keys import Keys
from shared.models import Alert
from shared.silences import SilenceStore
from simulator.frames import binance_account
from tests.helpers import alerts_of, in_process, wait_until
from tests.pipeline import Pipeline, clean_environ, rq_worker_count, write_config

KEYS = Keys()
PASSWORDS = {user: f"{user}-{secrets.token_hex(12)}" for user in USERS}
INSPECTOR = f"inspector-{secrets.token_hex(12)}"
DOWN_AFTER = 2.0
"""MONITORX_FEED_DOWN_AFTER of the end-to-end run, in seconds."""
DENIED_EVERYWHERE = (
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("KEYS", "*"),
    ("DEBUG", "SLEEP", "0"),
    ("ACL", "LIST"),
    ("SHUTDOWN",),
)


def password_env(passwords: dict[str, str]) -> dict[str, str]:
    return {f"MONITORX_REDIS_PASSWORD_{user.upper()}": pw for user, pw in passwords.items()}


def run_acl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``monitorx acl`` in a clean environment (no MONITORX_* of ours, no ``.env``) plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "monitorx", "acl", *args],
        env={**clean_environ(), **env},
        cwd=Path(__file__).parent,  # no .env there
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class AclRedis:
    """A redis-server loaded with an ACL file; URLs of each user."""

    def __init__(self, port: int, text: str) -> None:
        self.port = port
        self.text = text

    def url(self, user: str) -> str:
        password = INSPECTOR if user == "inspector" else PASSWORDS[user]
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    def client(self, user: str, decode: bool = True) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.url(user), decode_responses=decode)

    @property
    def anonymous(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_acl_redis(sup: Supervisor, workdir: Path, acl_text: str) -> AclRedis:
    """A private redis-server (loopback, no persistence) with ``acl_text`` plus the inspector."""
    digest = hashlib.sha256(INSPECTOR.encode()).hexdigest()
    aclfile = workdir / "users.acl"
    aclfile.write_text(f"{acl_text}user inspector on #{digest} ~* &* +@all\n")
    port = free_port()
    binary = shutil.which("redis-server")
    assert binary is not None
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    sup.start(
        "redis-acl", [*argv, "--dir", str(workdir), "--aclfile", str(aclfile)], stdout=subprocess.DEVNULL
    )
    server = AclRedis(port, acl_text)
    inspector = server.client("inspector")
    wait_until(lambda: _pings(inspector), 10, what="redis-server with the ACL file")
    inspector.close()
    return server


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.ConnectionError:
        return False


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    done = run_acl(password_env(PASSWORDS))
    assert done.returncode == 0, done.stderr
    sup = Supervisor()
    try:
        yield start_acl_redis(sup, tmp_path_factory.mktemp("redis-acl"), done.stdout)
    finally:
        sup.stop_all()


@pytest.fixture
def acl(acl_server: AclRedis) -> Iterator[AclRedis]:
    """The ACL Redis, emptied, its ACL LOG reset."""
    inspector = acl_server.client("inspector")
    inspector.flushall()
    inspector.execute_command("ACL", "LOG", "RESET")
    inspector.close()
    yield acl_server


def acl_log(server: AclRedis) -> list[dict[str, Any]]:
    inspector = server.client("inspector")
    try:
        entries: Any = inspector.execute_command("ACL", "LOG")
    finally:
        inspector.close()
    return [_entry(e) for e in entries]


def _entry(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def refused(call: Callable[[], object]) -> bool:
    """Whether Redis answers NOPERM."""
    try:
        call()
    except redis_lib.exceptions.NoPermissionError:
        return True
    return False


# -- the file -----------------------------------------------------------------------------------------


def test_the_file_loads_the_default_user_is_off_and_it_holds_no_password(acl: AclRedis) -> None:
    assert acl.text.splitlines()[0].startswith("user default off")
    assert [line.split()[1] for line in acl.text.splitlines()] == ["default", *USERS]
    assert not any(pw in acl.text for pw in PASSWORDS.values())
    for user, pw in PASSWORDS.items():
        assert f"#{hashlib.sha256(pw.encode()).hexdigest()}" in acl.text, user
    anonymous = redis_lib.Redis.from_url(acl.anonymous)
    with pytest.raises(redis_lib.exceptions.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis_lib.exceptions.AuthenticationError):
        anonymous.get("mx:counters")
    with pytest.raises(redis_lib.exceptions.AuthenticationError):
        anonymous.execute_command("AUTH", "default", "anything")
    wrong = redis_lib.Redis.from_url(f"redis://worker:{PASSWORDS['web']}@127.0.0.1:{acl.port}/0")
    with pytest.raises(redis_lib.exceptions.AuthenticationError):
        wrong.ping()
    for user in USERS:
        client = acl.client(user)
        assert client.ping(), user
        client.close()


def test_the_prefix_is_followed_and_its_glob_characters_escaped() -> None:
    done = run_acl({**password_env(PASSWORDS), "MONITORX_PREFIX": "desk*1:"})
    assert done.returncode == 0, done.stderr
    ingestor = next(line for line in done.stdout.splitlines() if line.startswith("user ingestor "))
    assert "~desk\\*1:snapshots" in ingestor.split() and "mx:" not in ingestor


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "Field required"),
        ("short", f"at least {MIN_PASSWORD}"),
        ("p@ss/word:0123456789ab", "only letters"),
    ],
    ids=["missing", "too-short", "not-url-safe"],
)
def test_a_bad_password_exits_2_naming_the_variable_and_never_printing_one(
    value: str | None, reason: str
) -> None:
    env = password_env(PASSWORDS)
    if value is None:
        del env["MONITORX_REDIS_PASSWORD_WEB"]
    else:
        env["MONITORX_REDIS_PASSWORD_WEB"] = value
    done = run_acl(env)
    assert done.returncode == 2 and done.stdout == ""
    assert "MONITORX_REDIS_PASSWORD_WEB" in done.stderr and reason in done.stderr, done.stderr
    assert not [pw for pw in [*env.values()] if pw in done.stderr]


def test_output_file_is_written_whole_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "users.acl"
    done = run_acl(password_env(PASSWORDS), "--output", str(target))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert target.read_text() == run_acl(password_env(PASSWORDS)).stdout
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["users.acl"]  # no temporary file left


def test_every_key_of_shared_keys_has_a_user_that_writes_it(acl: AclRedis) -> None:
    """A key added to shared/keys.py without a grant here fails (the heartbeat with a real role)."""
    inspector = acl.client("inspector")
    missing = [
        key for key in sample_keys() if not [u for u in USERS if _dryrun(inspector, u, "SET", key, "v")]
    ]
    inspector.close()
    assert missing == []


def sample_keys() -> list[str]:
    """One key of each member of :class:`Keys`."""
    found = []
    for name in (n for n in dir(Keys) if not n.startswith("_") and n != "prefix"):
        member = getattr(KEYS, name)
        if not callable(member):
            found.append(str(member))
        elif name == "heartbeat":
            found.append(member("worker", "w1"))
        else:
            found.append(member(*["x"] * (member.__code__.co_argcount - 1)))
    return found


def _dryrun(inspector: redis_lib.Redis, user: str, *command: str) -> bool:
    return bool(inspector.execute_command("ACL", "DRYRUN", user, *command) == "OK")


# -- refusals -----------------------------------------------------------------------------------------


def test_each_user_is_refused_what_it_must_not_do(acl: AclRedis) -> None:
    alert = {"alert": "{}"}
    ingestor, alerter, web, worker = (acl.client(u) for u in ("ingestor", "alerter", "web", "worker"))
    # the ingestor: its own keys only, never the alerts stream nor RQ
    assert refused(lambda: ingestor.xadd(KEYS.alerts, alert))
    assert refused(lambda: ingestor.lpush("rq:queue:monitorx", "job"))
    assert refused(lambda: enqueue(acl, "ingestor"))
    assert refused(lambda: ingestor.get("rq:workers"))
    assert refused(lambda: ingestor.hgetall(KEYS.silences))
    assert refused(lambda: ingestor.hgetall(KEYS.canary))  # the canary's record: delete only (canary off)
    assert ingestor.delete(KEYS.canary) == 0
    assert ingestor.xadd(KEYS.snapshots, {"account": "A", "seq": "1", "observed_at": "1.0"})
    # the alerter: cannot enqueue a job nor read RQ
    assert refused(lambda: enqueue(acl, "alerter"))
    assert refused(lambda: alerter.lpush("rq:queue:monitorx", "job"))
    assert refused(lambda: alerter.hset(KEYS.silences, "s", "{}"))  # reads silences only
    assert refused(lambda: alerter.xadd(KEYS.snapshots, alert))
    # web: reads everything, writes silences and groups only
    assert web.hgetall(KEYS.counters) == {} and web.llen("rq:queue:monitorx") == 0
    assert refused(lambda: web.xadd(KEYS.alerts, alert))
    assert refused(lambda: web.hset(KEYS.counters, "x", 1))
    assert refused(lambda: web.hset(KEYS.firing, "x", "{}"))
    assert refused(lambda: web.lpush("rq:queue:monitorx", "job"))
    assert refused(lambda: enqueue(acl, "web"))
    assert web.hset(KEYS.silences, "s", "{}") == 1 and web.zadd(KEYS.groups, {"g": 1.0}) == 1
    # a worker: reads snapshots, never writes them; cannot touch silences
    assert refused(lambda: worker.hset(KEYS.latest("A"), "snapshot", "{}"))
    assert refused(lambda: worker.hgetall(KEYS.silences))
    assert enqueue(acl, "dispatcher") and enqueue(acl, "worker")
    inspector = acl.client("inspector")
    for user in USERS:
        client = acl.client(user)
        for command in DENIED_EVERYWHERE:  # DEBUG is refused before the ACL: asked with DRYRUN
            assert not _dryrun(inspector, user, *command), (user, command)
            if command[0] != "DEBUG":
                assert refused(lambda: client.execute_command(*command)), (user, command)  # noqa: B023
        assert refused(lambda: client.get("other:key")), user  # noqa: B023
        client.close()
    assert inspector.dbsize() > 0 and inspector.ping()  # not flushed, not shut down
    inspector.close()


def enqueue(acl: AclRedis, user: str) -> str:
    """Enqueue a job on the MonitorX queue as ``user``, as rq does; its id."""
    client = acl.client(user, decode=False)
    try:
        return str(Queue("monitorx", connection=client).enqueue("workers.bench.noop").id)
    finally:
        client.close()


# -- the pipeline, each process as its own user -----------------------------------------------------


def low_balance_config(path: Path) -> Path:
    """A configuration whose low_balance check fires on the simulator's Binance accounts."""
    thresholds = {"USDT": 10000, "USDC": 10000, "BNB": 3}
    low = {"check": "low_balance", "accounts": ["BINANCE-*"], "params": {"thresholds": thresholds}}
    return write_config(path, {"low-balance": low})


@pytest.fixture
def pipeline(tmp_path: Path, acl: AclRedis) -> Iterator[Pipeline]:
    config = low_balance_config(tmp_path / "config.yaml")
    urls = {role: acl.url(role) for role in ("ingestor", "dispatcher", "worker", "alerter")}
    env = {"MONITORX_FEED_DOWN_AFTER": str(DOWN_AFTER)}
    made = Pipeline(tmp_path / "run", acl.url("inspector"), config, env=env, urls=urls)
    yield made
    made.close()


def test_pipeline_end_to_end_with_each_process_as_its_own_user(pipeline: Pipeline, acl: AclRedis) -> None:
    pipeline.start_core(workers=2)
    pipeline.start_simulator(
        "--scenario", "steady", "--hz", "5", "--accounts", "2", "--no-okx", "--low-at", "0"
    )
    [low] = pipeline.wait(lambda: of(pipeline.alerts(), "low_balance"), 30, "the low_balance alert")
    assert low["account"] == binance_account(1) and low["state"] == "firing"
    inspector = acl.client("inspector")
    users = {c.get("user") for c in inspector.client_list()} - {"inspector"}
    assert users == {"ingestor", "dispatcher", "worker", "alerter"}, users

    # the feed stops: the ingestor's feed_down alert goes through the dispatcher to the alerter
    assert pipeline.simulator is not None
    pipeline.stop([pipeline.simulator])
    [down] = pipeline.wait(lambda: of(pipeline.alerts(), "feed_down"), 20, "the feed_down alert")
    assert down["state"] == "firing" and down["account"] == "galio"
    assert [a.id for a in alerts_of(inspector, "feed_down")] == [down["id"]]
    pipeline.wait(pipeline.drained, 20, "the alerts drained")

    for role in ("ingestor", "dispatcher", "worker", "alerter"):  # each service's healthcheck
        done = monitorx(acl.url(role), "health", "--role", role)
        assert done.returncode == 0, (role, done.stderr)
    operator_commands(acl)
    web_reads(acl, pipeline)
    assert rq_worker_count(acl.url("inspector")) == 2
    assert acl_log(acl) == [], "a process was refused something it needs"
    output = pipeline.procs.all_output()
    assert not [pw for pw in PASSWORDS.values() if pw in output]
    inspector.close()


def operator_commands(acl: AclRedis) -> None:
    """What an operator runs, as the operator user, each exiting 0 (status: 1 when unhealthy),
    around a dead letter the alerter user writes: listed, replayed (an entry on the alerts stream
    for the receiver that gave up), purged."""
    url = acl.url("operator")
    assert monitorx(url, "status", "--json").returncode in (0, 1)
    silence = ("silence", "add", "check=stale_data", "--for", "1h", "--reason", "acl test", "--by", "ops")
    added = monitorx(url, *silence)
    assert added.returncode == 0, added.stderr
    alerter, inspector = acl.client("alerter"), acl.client("inspector")
    [(_, fields)] = inspector.xrevrange(KEYS.alerts, count=1)
    dead_letter(alerter, KEYS, fields["alert"], "jsonl", "acl test", 3, time.time())
    commands = [
        ("silence", "list"),
        ("silence", "expire", added.stdout.split()[-1]),
        ("dlq", "list"),
        ("dlq", "replay", "--all"),
        ("dlq", "purge", "--before", str(time.time() + 1)),
        ("alerts",),
        ("alerts", "log"),
    ]
    for args in commands:
        done = monitorx(url, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    [(_, replayed)] = inspector.xrevrange(KEYS.alerts, count=1)
    assert replayed == {**fields, "replay": "jsonl"}
    alerter.close()
    inspector.close()


def web_reads(acl: AclRedis, pipeline: Pipeline) -> None:
    """``monitorx web`` as the web user serves the status and the metrics; the web user can add and
    expire a silence (what the page's operator forms write)."""
    port = free_port()
    env = {**pipeline.env(), "MONITORX_REDIS_URL": acl.url("web")}
    child = pipeline.procs.start("web", [sys.executable, "-m", "monitorx", "web", "--port", str(port)], env)
    for path in ("/api/status", "/metrics"):
        status = wait_until(lambda: _http_status(f"http://127.0.0.1:{port}{path}"), 20, what=path)  # noqa: B023
        assert status == 200, path
    pipeline.stop([child])
    web = acl.client("web")
    store = SilenceStore(web, KEYS)
    now = time.time()
    silence = store.add(["check=feed_down"], 3600.0, "acl test", "web", now, 24 * 3600.0)
    assert store.expire(silence.id, now + 1)
    web.close()


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def monitorx(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitorx", *args],
        env={**clean_environ(), "MONITORX_REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def of(alerts: list[dict[str, Any]], check: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["check"] == check]


# -- the dispatcher forwards feed alerts ------------------------------------------------------------


def test_the_dispatcher_forwards_feed_alerts_unchanged_and_drops_anything_else(
    r: redis_lib.Redis, redis_url: str
) -> None:
    d, _, _ = in_process(redis_url, load_plan(None))
    health = FeedHealth("galio", "ws://galio.example/feed", 1.0, 1000.0)
    [feed] = health.evaluate(1001.0)
    other = make_alert(
        instance="low-balance",
        check="low_balance",
        account="A",
        state="firing",
        message=Message("t", "x", "critical"),
        observed_at=1.0,
        emitted_at=1.0,
    )
    texts = [feed.model_dump_json(), other.model_dump_json(), "not json", json.dumps({"id": "x"})]
    for text in texts:
        r.xadd(KEYS.snapshots, {K.FEED_ALERT_FIELD: text})
    d.step()
    [(_, fields)] = r.xrange(KEYS.alerts)
    assert fields == {"alert": texts[0]}  # byte for byte what the ingestor wrote
    assert Alert.model_validate_json(fields["alert"]) == feed
    assert r.hget(KEYS.counters, K.COUNTER_ALERTS) == "1"
    assert r.hget(KEYS.counters, K.COUNTER_MALFORMED_ENTRIES) == "3"
    assert r.hget(KEYS.counters, K.COUNTER_JOBS) in (None, "0")  # an alert entry queues no job
    [group] = r.xinfo_groups(KEYS.snapshots)
    assert group["pending"] == 0 and group["entries-read"] == len(texts)
