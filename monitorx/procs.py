"""Child-process supervision for the demo, the benchmark and end-to-end tests: a private
redis-server, pipeline processes started with an environment, and an orderly stop.

Children never outlive the supervisor: each runs in a session of its own (so a Ctrl-C reaches
the supervisor alone, which stops them in order) and asks the kernel for SIGTERM when its parent
dies (``PR_SET_PDEATHSIG``, Linux), so a supervisor killed with SIGKILL takes them down too.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
"""Seconds a child gets to exit after SIGTERM before it is killed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent exits."""


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` making the child receive SIGTERM when ``parent`` exits (Linux only;
    elsewhere a no-op). A parent that died before the call is caught by the ``getppid`` test."""

    def arm() -> None:
        prctl = getattr(ctypes.CDLL(None), "prctl", None)
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Supervisor:
    """Starts children and stops them all, newest first: SIGTERM, wait, then SIGKILL."""

    children: list[Child] = field(default_factory=list)
    cwd: Path | None = None
    """Working directory of the children (None: this process's)."""

    def base_environ(self) -> dict[str, str]:
        """The environment every child starts from, before its own ``env`` (default: ours)."""
        return dict(os.environ)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
    ) -> Child:
        proc = subprocess.Popen(
            list(argv),
            env={**self.base_environ(), **(env or {})},
            cwd=self.cwd,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()),
        )
        child = Child(name, proc)
        self.children.append(child)
        log.debug("started %s (pid %d)", name, proc.pid)
        return child

    def python(self, name: str, module: str, args: Sequence[str], env: Mapping[str, str]) -> Child:
        return self.start(name, [sys.executable, "-m", module, *args], env)

    def exited(self) -> list[Child]:
        return [c for c in self.children if not c.alive]

    def stop(self, child: Child, timeout: float = STOP_TIMEOUT) -> int:
        if child.alive:
            child.proc.send_signal(signal.SIGTERM)
        try:
            return child.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not exit within %.0fs of SIGTERM: killing it", child.name, timeout)
            child.proc.kill()
            return child.proc.wait()

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> dict[str, int]:
        codes = {}
        for child in reversed(self.children):
            codes[child.name] = self.stop(child, timeout)
        self.children.clear()
        return codes


def start_redis(sup: Supervisor, workdir: Path) -> str:
    """A private redis-server (no persistence, loopback only) under ``sup``; returns its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make install installs it)")
    port = free_port()
    sup.start(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start within 10 s") from None
            time.sleep(0.05)
