"""End-to-end plumbing: the MonitorX processes as real subprocesses, their output captured to files,
and readers for what they leave behind (the JSONL file, Redis, ``rq info``).

Children get a clean environment (no ``MONITORX_*`` nor legacy setting of the developer's shell)
and run in a temporary directory (no stray ``.env`` is read). Every wait has a deadline and fails
at once, with the child's last output, when a process that should be running has exited.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import redis as redis_lib
import yaml
from rq import Worker

from alerter.sinks import slack_message
from monitorx.procs import Child, Supervisor
from shared.keys import Keys
from shared.models import Alert
from tests.helpers import free_port, wait_until
from tests.slack_standin import SlackStandin

T = TypeVar("T")

KEYS = Keys()
STOP_DEADLINE = 15.0
"""Seconds a process may take to exit after SIGTERM."""
RQ_CLI = Path(sys.executable).with_name("rq")
LEGACY_NAMES = ("WS_URI", "PASSWORD", "SLACK_WEBHOOK_URL")
"""Legacy fallbacks of the settings (``USERNAME`` is left alone: it only counts with a password)."""
ALERT_KEYS = ("id", "check", "account", "state", "text", "observed_at", "delivered_at")


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MONITORX_") and k not in LEGACY_NAMES}


def write_config(path: Path, checks: Mapping[str, Any], **top: Any) -> Path:
    """A native YAML configuration file."""
    path.write_text(yaml.safe_dump({"version": 1, **top, "checks": dict(checks)}, sort_keys=False))
    return path


class Processes(Supervisor):
    """A Supervisor whose children run in ``workdir`` with a clean environment plus ``env``, each
    writing standard output and error to its own files under ``workdir/logs``."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(cwd=workdir)
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.logs: dict[int, tuple[Path, Path]] = {}
        """pid -> (stdout file, stderr file)."""
        self._files: list[IO[bytes]] = []
        self._starts: Counter[str] = Counter()

    def base_environ(self) -> dict[str, str]:
        return clean_environ()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
    ) -> Child:
        self._starts[name] += 1
        stem = f"{name}.{self._starts[name]}"
        out_path, err_path = self.logdir / f"{stem}.out", self.logdir / f"{stem}.err"
        out, err = out_path.open("wb"), err_path.open("wb")
        self._files += [out, err]
        child = super().start(
            name,
            argv,
            env,
            stdout=out if stdout is None else stdout,
            stderr=err if stderr is None else stderr,
        )
        self.logs[child.proc.pid] = (out_path, err_path)
        return child

    def output(self, child: Child) -> str:
        """Everything the child wrote so far, standard output then standard error."""
        return "".join(p.read_text(errors="replace") for p in self.logs[child.proc.pid])

    def stderr(self, child: Child) -> str:
        return self.logs[child.proc.pid][1].read_text(errors="replace")

    def all_output(self) -> str:
        return "".join(p.read_text(errors="replace") for pair in self.logs.values() for p in pair)

    def running(self) -> list[Child]:
        return [c for c in self.children if c.alive]

    def close(self) -> dict[str, int]:
        """Stop every child still running and close the log files."""
        try:
            return self.stop_all(timeout=5)
        finally:
            for f in self._files:
                f.close()


def sigterm(children: Sequence[Child], deadline: float = STOP_DEADLINE) -> list[tuple[str, int | None]]:
    """SIGTERM every child at once; (name, exit code) of each, the code None if it was still
    running ``deadline`` seconds after the signal."""
    sent = time.monotonic()
    for child in children:
        child.proc.send_signal(signal.SIGTERM)
    codes: list[tuple[str, int | None]] = []
    for child in children:
        try:
            codes.append((child.name, child.proc.wait(timeout=max(0.0, sent + deadline - time.monotonic()))))
        except subprocess.TimeoutExpired:
            codes.append((child.name, None))
    return codes


class Pipeline:
    """The MonitorX processes around one Redis, one simulated (or scripted) Galio and one config."""

    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        config: Path | None = None,
        *,
        slack: SlackStandin | None = None,
        galio_uri: str | None = None,
        auth: bool = True,
        env: Mapping[str, str] | None = None,
        urls: Mapping[str, str] | None = None,
    ) -> None:
        """``redis_url`` is every process's Redis and the one the readers below use; ``urls``
        gives a role (ingestor, dispatcher, worker, alerter) its own (e.g. its own Redis user)."""
        self.procs = Processes(workdir)
        self.redis_url = redis_url
        self.r: redis_lib.Redis = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        self.jsonl = workdir / "alerts.jsonl"
        self.username = "desk-bot"
        self.password = f"galio-pw-{secrets.token_hex(8)}"
        self.slack_url = (
            None if slack is None else slack.url(f"/services/T0E2E/B0E2E/hook-{secrets.token_hex(8)}")
        )
        self.sim_port = free_port()
        self.galio_uri = galio_uri or f"ws://127.0.0.1:{self.sim_port}"
        self._auth = auth
        self._env = dict(env or {})
        self._urls = dict(urls or {})
        self._config = config
        self._stopped: set[int] = set()
        self.simulator: Child | None = None
        self.ingestor: Child | None = None
        self.dispatcher: Child | None = None
        self.alerter: Child | None = None
        self.workers: list[Child] = []

    # -- environment and processes ----------------------------------------------------------------

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never show up in output or Redis: the password and the webhook URL (and its
        path, which is the secret part)."""
        found = [self.password]
        if self.slack_url is not None:
            found += [self.slack_url, self.slack_url.split("/", 3)[3]]
        return tuple(found)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of every process of this pipeline, plus ``extra``."""
        env = {
            "MONITORX_REDIS_URL": self.redis_url,
            "MONITORX_GALIO_URI": self.galio_uri,
            "MONITORX_ALERTS_JSONL": str(self.jsonl),
            "MONITORX_TICK_SECONDS": "0.5",
            "MONITORX_BACKOFF_MIN": "0.1",
            "MONITORX_BACKOFF_MAX": "0.5",
            "MONITORX_RETRY_IDLE_MS": "1000",
            "MONITORX_LOG_LEVEL": "INFO",
            # the alerts about MonitorX itself off: most tests run some of the processes only
            # (tests/test_views_live.py turns them on)
            "MONITORX_SELF_CHECK_SECONDS": "0",
        }
        if self._auth:
            env["MONITORX_GALIO_USERNAME"] = self.username
            env["MONITORX_GALIO_PASSWORD"] = self.password
        if self._config is not None:
            env["MONITORX_CONFIG"] = str(self._config)
        if self.slack_url is not None:
            env["MONITORX_SLACK_WEBHOOK_URL"] = self.slack_url
        env.update(self._env)
        env.update(extra or {})
        return env

    def role_env(self, role: str) -> dict[str, str]:
        """The environment of a process of ``role``: :meth:`env` with the role's own Redis URL."""
        return self.env({"MONITORX_REDIS_URL": self._urls[role]} if role in self._urls else None)

    def set_env(self, **values: str) -> None:
        """Change the environment of the processes started from now on."""
        self._env.update(values)

    def start_simulator(self, *args: str) -> Child:
        """``python -m simulator`` on the pipeline's Galio port with its credentials; returns once
        it listens."""
        argv = ["--port", str(self.sim_port), "--username", self.username, "--password", self.password]
        child = self.procs.python("simulator", "simulator", [*argv, *args], env=self.env())
        self.simulator = child
        self.wait(lambda: "simulator listening on" in self.procs.output(child), 15, "the simulator to listen")
        return child

    def start_alerter(self, wait: bool = True) -> Child:
        """``python -m alerter``; with ``wait``, returns once it runs (its SIGTERM handler is in)."""
        child = self.alerter = self.procs.python("alerter", "alerter", [], env=self.role_env("alerter"))
        if wait:
            self.wait(lambda: "delivering to" in self.procs.stderr(child), 20, "the alerter to start")
        return child

    def start_worker(self, name: str | None = None) -> Child:
        args = [] if name is None else ["--name", name]
        child = self.procs.python(name or "worker", "workers", args, env=self.role_env("worker"))
        self.workers.append(child)
        return child

    def start_ingestor(self) -> Child:
        self.ingestor = self.procs.python("ingestor", "ingestor", [], env=self.role_env("ingestor"))
        return self.ingestor

    def start_core(self, workers: int = 2) -> None:
        """Alerter, workers, dispatcher and ingestor; returns once they are all at work (the
        ingestor may still be waiting for Galio)."""
        self.start_alerter(wait=False)
        for n in range(workers):
            self.start_worker(f"e2e-worker-{n + 1}-{secrets.token_hex(3)}")
        self.start_dispatcher()
        self.start_ingestor()
        self.wait_ready(workers)

    def start_dispatcher(self) -> Child:
        self.dispatcher = self.procs.python("dispatcher", "dispatcher", [], env=self.role_env("dispatcher"))
        return self.dispatcher

    def wait_ready(self, workers: int) -> None:
        """Until the workers are registered and the dispatcher and the alerter said they run
        (a consumer shows in its group only once it read an entry)."""
        self.wait(lambda: rq_worker_count(self.redis_url) == workers, 20, f"{workers} rq workers")
        for child, says in ((self.dispatcher, "routing"), (self.alerter, "delivering to")):
            assert child is not None
            self.wait(lambda: says in self.procs.stderr(child), 20, f"{child.name} to start")  # noqa: B023

    # -- waiting ----------------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Fail with the child's output if a process started and not stopped on purpose has exited."""
        for child in self.procs.children:
            if not child.alive and child.proc.pid not in self._stopped:
                tail = self.procs.output(child)[-3000:]
                raise AssertionError(f"{child.name} exited with {child.proc.returncode}:\n{tail}")

    def wait(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        def alive_and() -> T:
            self.check_alive()
            return predicate()

        return wait_until(alive_and, timeout=timeout, interval=0.05, what=what)

    def expect_exit(self, children: Iterable[Child]) -> None:
        """These children are being stopped: their exit is no failure of check_alive()."""
        self._stopped |= {c.proc.pid for c in children}

    def stop(
        self, children: Sequence[Child], deadline: float = STOP_DEADLINE
    ) -> list[tuple[str, int | None]]:
        """SIGTERM the children at once; (name, exit code or None if still running at the deadline)."""
        self.expect_exit(children)
        return sigterm(children, deadline)

    # -- reading results --------------------------------------------------------------------------

    def alerts(self) -> list[dict[str, Any]]:
        return read_jsonl(self.jsonl)

    def drained(self) -> bool:
        """True when the alerter has read and acknowledged every alert on the stream."""
        return alerts_drained(self.r)

    def close(self) -> dict[str, int]:
        try:
            return self.procs.close()
        finally:
            self.r.close()


# -- readers ---------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSONL file (a line being written is left for the next read)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def alerts_drained(r: redis_lib.Redis) -> bool:
    """Every alert routed and every notice handled: each consumer group of the alerts stream and
    of the receivers' notify streams has read the newest entry and has nothing pending, and no
    group is due."""
    streams = [KEYS.alerts, *r.scan_iter(KEYS.notify("*"))]
    if not all(_stream_drained(r, stream) for stream in streams):
        return False
    return not r.zrangebyscore(KEYS.groups, "-inf", time.time())


def _stream_drained(r: redis_lib.Redis, stream: str) -> bool:
    try:
        groups: Any = r.xinfo_groups(stream)
    except redis_lib.ResponseError:
        return False
    if not groups:
        return False
    last: Any = r.xrevrange(stream, count=1)
    newest = last[0][0] if last else "0-0"
    return all(int(g["pending"]) == 0 and g["last-delivered-id"] == newest for g in groups)


def stream_alert_ids(r: redis_lib.Redis) -> list[str]:
    entries: Any = r.xrange(KEYS.alerts)
    return [json.loads(fields["alert"])["id"] for _, fields in entries if "alert" in fields]  # not canaries


def rq_worker_count(redis_url: str) -> int:
    client = redis_lib.Redis.from_url(redis_url)
    try:
        return int(Worker.count(connection=client))
    finally:
        client.close()


def rq_info(redis_url: str) -> str:
    """``rq info --url URL`` from the virtualenv; fails unless it exits 0."""
    done = subprocess.run(
        [str(RQ_CLI), "info", "--url", redis_url],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_environ(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def slack_text(record: Mapping[str, Any]) -> str:
    """The ``text`` slack-sdk posts for a delivered alert (a JSONL record)."""
    alert = Alert.model_validate({k: v for k, v in record.items() if k not in ("delivered_at", "group_key")})
    return slack_message(alert)[0]


def posted_texts(slack: SlackStandin) -> list[str]:
    return [str(post.json()["text"]) for post in slack.ok]


def _values(r: redis_lib.Redis, key: bytes) -> list[bytes]:
    kind = r.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    reply: Any
    if kind == "string":
        reply = r.get(key)
        return [reply] if reply is not None else []
    if kind == "hash":
        reply = r.hgetall(key)
        return [x for pair in reply.items() for x in pair]
    if kind == "list":
        reply = r.lrange(key, 0, -1)
        return list(reply)
    if kind == "set":
        reply = r.smembers(key)
        return list(reply)
    if kind == "zset":
        reply = r.zrange(key, 0, -1)
        return list(reply)
    if kind == "stream":
        reply = r.xrange(key)
        return [x for _, fields in reply for pair in fields.items() for x in pair]
    if kind == "none":
        return []  # expired meanwhile
    raise AssertionError(f"unexpected Redis type {kind} of {key!r}")


def _inflated(blob: bytes) -> Iterator[bytes]:
    yield blob
    try:
        yield zlib.decompress(blob)  # rq stores job data compressed
    except zlib.error:
        pass


def redis_contents(redis_url: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, key-or-value) in Redis: each key itself, then every string, hash field and
    value, list item, set and sorted-set member and stream field and value; compressed values are
    also given inflated."""
    r = redis_lib.Redis.from_url(redis_url)
    try:
        for key in r.scan_iter(count=1000):
            yield key, key
            for value in _values(r, key):
                for blob in _inflated(value):
                    yield key, blob
    finally:
        r.close()


def leaks(texts: Iterable[tuple[str, str]], secret_values: Iterable[str]) -> list[str]:
    """``where: secret`` for each (where, text) holding a secret."""
    return [f"{where}: {s!r}" for where, text in texts for s in secret_values if s in text]
