"""Report slots in UTC with a controllable clock: no waiting for real slots."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.schedule import decide, latest_slot

LEGACY = ("0 0,6,12,18 * * *",)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_latest_slot_is_utc() -> None:
    assert latest_slot(LEGACY, ts("2026-11-25 13:15:00")) == ts("2026-11-25 12:00:00")
    assert latest_slot(LEGACY, ts("2026-11-25 12:00:00")) == ts("2026-11-25 12:00:00")
    assert latest_slot(LEGACY, ts("2026-11-26 05:59:59")) == ts("2026-11-26 00:00:00")


def test_on_time_slot_is_sent_once() -> None:
    slot = ts("2026-11-25 12:00:00")
    assert decide(LEGACY, ts("2026-11-25 06:00:00"), slot + 3, "late").action == "send"
    assert decide(LEGACY, slot, slot + 8, "late").action == "none"


def test_first_start_does_not_send_an_old_slot() -> None:
    d = decide(LEGACY, None, ts("2026-11-25 13:15:00"), "late")
    assert (d.action, d.slot) == ("skip", ts("2026-11-25 12:00:00"))


def test_first_start_inside_the_minute_sends_it() -> None:
    assert decide(LEGACY, None, ts("2026-11-25 12:00:20"), "late").action == "send"


def test_missed_slot_is_sent_late_once_or_skipped() -> None:
    last, now = ts("2026-11-25 00:00:00"), ts("2026-11-25 13:15:00")  # down across 06:00 and 12:00
    late = decide(LEGACY, last, now, "late")
    assert (late.action, late.slot, late.late) == ("send", ts("2026-11-25 12:00:00"), True)
    assert decide(LEGACY, late.slot, now + 5, "late").action == "none"
    assert decide(LEGACY, last, now, "skip").action == "skip"
