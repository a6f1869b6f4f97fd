"""The quiet-desk bench's in-process baseline: the prototype's loop over simulated frames."""

from __future__ import annotations

from pathlib import Path

from engine.plan import Plan, load_plan
from monitorx.bench import QUIET_CONFIG, in_process, quiet_frames
from simulator.frames import FrameGenerator, preset


def quiet_plan(tmp_path: Path) -> Plan:
    config = tmp_path / "quiet.yaml"
    config.write_text(QUIET_CONFIG)
    return load_plan(config)


def test_baseline_evaluates_every_check_on_every_account_of_every_frame(tmp_path: Path) -> None:
    plan = quiet_plan(tmp_path)
    texts = quiet_frames(accounts=12, hz=5.0, first=50, count=6)
    assert len(texts) == 6
    run = in_process(texts, plan)
    assert {b.check.name for b in plan.for_snapshot("BINANCE-AAZ07-UM")} == {"low_balance", "stale_data"}
    assert (run.frames, run.evaluations, run.breached) == (6, 6 * 12 * 2, 0), "nothing breaches"
    assert run.cpu_ms_per_frame > 0


def test_baseline_counts_what_breaches(tmp_path: Path) -> None:
    generator = FrameGenerator(preset("quiet", accounts=3, low_at=0.0))
    texts = [text for text in map(generator.text, (0.0, 0.2)) if text]
    run = in_process(texts, quiet_plan(tmp_path))
    assert (run.evaluations, run.breached) == (2 * 3 * 2, 2), "account 1's USDT, on both frames"
