"""The status page in a real headless browser: Chromium (the distribution's package, installed by
``make install`` through deploy/install-chromium.sh) loads ``monitorx web``'s page while a real
pipeline (simulator, ingestor, dispatcher, a worker, alerter: tests.pipeline) fires an alert, and
the page it renders names that alert. The screenshot is kept in the test's directory and copied
to ``build/screenshots/status-page.png`` to be looked at after the run."""

from __future__ import annotations

import html
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from engine.plan import load_config
from monitorx.status import FiringAlert, Status
from monitorx.web import Operator, WebServer, reader
from shared.heartbeat import ROLES
from shared.redisio import connect
from shared.silences import SilenceStore
from simulator.frames import binance_account
from tests.helpers import free_port
from tests.pipeline import KEYS, Pipeline, write_config

CHROMIUM = "chromium"
BROWSER_TIMEOUT_S = 90
"""Seconds one Chromium run may take before the test fails."""
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
LOW = binance_account(1)
WINDOW = (1280, 1600)


def chromium() -> str:
    """The browser's path; the test fails, saying how to install it, when it is missing."""
    found = shutil.which(CHROMIUM)
    if found is None:
        pytest.fail("chromium is not installed: run `make install` (deploy/install-chromium.sh installs it)")
    return found


def browse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run with a throwaway profile; fails unless it exits 0 in time."""
    argv = [
        chromium(),
        *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


@pytest.fixture
def pipeline(tmp_path: Path, redis_url: str) -> Iterator[Pipeline]:
    """Every core process and the simulator, with account 1's USDT low from the start: the
    low-balance check fires at the first evaluation."""
    checks = {
        "low-balance": {
            "check": "low_balance",
            "accounts": ["BINANCE-*"],
            "params": {"thresholds": {"USDT": 10000, "USDC": 10000, "BNB": 3}},
            "cooldown": 300,
        }
    }
    config = write_config(tmp_path / "monitorx.yaml", checks, stale_after=60)
    made = Pipeline(tmp_path / "run", redis_url, config)
    try:
        made.start_core(workers=1)
        made.start_simulator("--scenario", "steady", "--hz", "5", "--accounts", "3", "--low-at", "0")
        yield made
    finally:
        made.close()


@pytest.fixture
def web(pipeline: Pipeline, redis_url: str) -> Iterator[tuple[str, Status]]:
    """``monitorx web``'s server on the pipeline's Redis and configuration, writable (the page
    links to the silences' forms); yields its URL once the alert fires and every role beats,
    with the status model of that moment."""
    config = load_config(Path(pipeline.env()["MONITORX_CONFIG"]))
    r = connect(redis_url)
    operator = Operator(SecretStr("browser-test-token"), SilenceStore(r, KEYS), 3600.0)
    server = WebServer(("127.0.0.1", free_port()), reader(r, KEYS, config), operator)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        status = pipeline.wait(lambda: ready(server.read()), 60, "the low-balance alert to fire")
        yield f"http://127.0.0.1:{server.server_address[1]}/", status
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        r.close()


def ready(status: Status) -> Status | None:
    """The status once account 1's low-balance alert is notified and every role has a fresh
    process; None before."""
    every_role = all(status.fresh(role) for role in ROLES)
    return status if every_role and low_alert(status) is not None else None


def low_alert(status: Status) -> FiringAlert | None:
    found = [f for f in status.alerts if f.alert.account == LOW and f.alert.check == "low_balance"]
    return found[0] if found and found[0].muted is None else None


def test_chromium_renders_the_status_page_with_the_firing_alert(
    tmp_path: Path, web: tuple[str, Status]
) -> None:
    url, status = web
    firing = low_alert(status)
    assert firing is not None
    dom = browse(tmp_path, "--dump-dom", url).stdout
    assert "<h2>Firing alerts</h2>" in dom
    alerts = dom.split("<h2>Firing alerts</h2>", 1)[1].split("</table>", 1)[0]
    assert html.escape(firing.alert.title, quote=False) in alerts and LOW in alerts
    assert "notified" in alerts and "low_balance" in alerts
    assert 'href="/silences"' in dom and "token" not in dom.split("</style>", 1)[1]

    shot = tmp_path / "status-page.png"
    browse(
        tmp_path, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", url
    )
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == WINDOW and len(png) > 20_000, (width, height, len(png))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOTS / "status-page.png")
