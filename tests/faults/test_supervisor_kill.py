"""Issue 9 item 9: children never outlive the supervisor, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers import wait_until
from tests.pipeline import clean_environ


def test_demo_killed_with_sigkill_takes_its_children_down(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "monitorx", "demo", "--seconds", "120"],
        cwd=tmp_path,
        env=clean_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        parent = psutil.Process(demo.pid)
        # redis, simulator, alerter, 2 workers, dispatcher, ingestor
        children = wait_until(
            lambda: len(parent.children()) >= 7 and parent.children(), 30, what="7 children"
        )
        assert demo.stdout is not None and "MonitorX demo running" in demo.stdout.readline().decode()
        os.kill(demo.pid, signal.SIGKILL)
        demo.wait(timeout=10)
        gone = wait_until(lambda: all(not alive(c) for c in children), 20, what="every child to exit")
        assert gone
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
