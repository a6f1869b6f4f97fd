"""A check shipped as a separate package, discovered through the ``monitorx.checks`` entry point."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from engine.plan import build
from engine.registry import Registry
from ingestor.normalize import normalize_account
from shared.config import parse
from shared.keys import Keys
from shared.models import Alert
from tests.helpers import in_process

FIXTURE = Path(__file__).parent / "fixtures" / "plugin"
CONFIG = """
checks:
  big:
    check: big_position
    accounts: ["BINANCE-*"]
    params: {max_size: 2}
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fixture package installed (pip, no network) into a private directory put on sys.path."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(FIXTURE),
        ],
        check=True,
    )
    sys.path.insert(0, str(target))
    yield str(target)
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("monitorx_plugin_demo")]:
        del sys.modules[name]


def test_plugin_is_discovered_and_its_alert_comes_out(
    plugin_path: str, redis_url: str, r: redis_lib.Redis
) -> None:
    registry = Registry.discover()
    assert "big_position" in registry.names
    plan = build(parse(CONFIG, "plugin.yaml"), registry)
    keys = Keys()
    d, worker, pub = in_process(redis_url, plan)
    obj = {"BTCUSDT": 3.5, "BTCUSDTAvg-Price": 64000, "ETHUSDT": 1}
    pub.publish([normalize_account("BINANCE-AAZ01-UM", obj, observed_at=5.0)])
    d.step()
    worker.work(burst=True)
    got = [Alert.model_validate_json(f["alert"]) for _, f in r.xrange(keys.alerts)]
    big = [a for a in got if a.check == "big_position"]
    assert len(big) == 1 and big[0].keys == ("BTCUSDT",)
    assert "BTCUSDT: 3.5000 above 2" in big[0].text


def test_without_the_plugin_the_check_is_unknown() -> None:
    assert "big_position" not in Registry.discover(plugins=False).names
