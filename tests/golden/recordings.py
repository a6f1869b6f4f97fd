"""The two recordings of the backtest's golden parity test, generated deterministically: an hour
of the simulator's demo incidents on six Binance accounts and the OKX account (a low balance, a
delta drift, a feed pause, jittered and repeated timestamps), replayed with the legacy
configuration; and a nasty one (junk, gaps, time going back, a lone surrogate, NaN figures)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from simulator.frames import FrameGenerator, preset

BASE = 1_800_012_600.0
"""Unix time of the first frame (2027-01-15 11:30 UTC: the 12:00 report slot falls inside)."""
HOUR_CONFIG = Path(__file__).resolve().parents[2].parent / "shared" / "legacy" / "features.json"
NASTY_CONFIG = """
stale_after: 10
checks:
  low: {check: low_balance, accounts: ["BINANCE-*"], cooldown: 300}
  margin:
    check: margin_risk
    accounts: ["BINANCE-*"]
    params: {thresholds: {usdt_usdc_ratio_min: 0.6, usdt_usdc_ratio_max: 2.0}}
    cooldown: 10
  delta: {check: delta, accounts: ["BINANCE-*"], params: {threshold: 100}, delay: 2, cooldown: 5}
  stale: {check: stale_data, accounts: ["*"], params: {max_age: 3}, resolved: true}
"""


def demo_hour(path: Path, seconds: float = 3600.0, hz: float = 5.0) -> Path:
    """The hour of demo incidents: every frame's time jittered by up to 50 ms, every 97th frame
    stamped with its predecessor's time."""
    scenario = preset(
        "demo", accounts=6, okx=True, low_at=120.0, low_account=3, delta_at=600.0, pause_at=1500.0,
        pause_for=20.0,
    )  # fmt: skip
    generator, rng = FrameGenerator(scenario), random.Random(7)
    with path.open("w", encoding="utf-8") as f:
        at = BASE
        for i in range(int(seconds * hz)):
            text = generator.text(i / hz)
            at = at if i % 97 == 0 else BASE + i / hz + rng.uniform(0.0, 0.05)
            if text is not None:
                f.write(json.dumps({"received_at": at, "frame": text}) + "\n")
    return path


def nasty(path: Path) -> Path:
    """45 s of two demo accounts, each frame sent twice, then spoiled as a real recording may be."""
    generator = FrameGenerator(preset("demo", accounts=2, okx=False, delta_at=2.0))
    texts = [(BASE + i / 5.0, generator.text((i // 2) * 2 / 5.0)) for i in range(226)]
    records = [{"received_at": at, "frame": text} for at, text in texts if text is not None]
    lines = spoilt(records)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def spoilt(records: list[dict[str, Any]]) -> list[str]:
    """The lines of a recording of these records (60 or more), with what a real one may hold mixed
    in after the 41st: a covered account with a lone surrogate in its name, a value that is not an
    object, blank and junk lines, a frame without pos, time going back, NaN figures, a repeated
    timestamp and a gap of 30 s."""
    lines = [json.dumps(rec) for rec in records]
    frame = json.loads(str(records[40]["frame"]))
    odd = {"BINANCE-AAZ07-UM\ud800": frame["pos"]["BINANCE-AAZ01-UM"], "BINANCE-AAZ01-UM": "not an object"}
    t = float(str(records[40]["received_at"]))
    balance = '"USDTwalletBalance": '
    nan = str(records[60]["frame"]).replace(balance, balance + 'NaN, "x": ')
    lines[41:41] = [
        json.dumps({"received_at": t + 0.01, "frame": json.dumps({"pos": odd})}),
        "",
        "junk",
        json.dumps({"received_at": t + 0.02, "frame": '{"other": 1}'}),
        json.dumps({"received_at": t - 3.0, "frame": records[10]["frame"]}),
        json.dumps({"received_at": t + 0.02, "frame": nan}),
        json.dumps({"received_at": t + 0.02, "frame": records[61]["frame"]}),
        json.dumps({"received_at": t + 30.0, "frame": records[62]["frame"]}),
    ]
    return lines
