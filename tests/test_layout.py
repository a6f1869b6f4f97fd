"""Block Kit layout of a group's notification: content, escaping and Slack's limits (the limits
are the stand-in's, which refuses what Slack refuses)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alerter import layout
from alerter.notify import Notification
from shared.models import Alert
from tests.slack_standin import BLOCKS_LIMIT, TEXT_LIMITS

GROUP_KEY = '{}:"desk":{check="delta"}'


def make_alert(
    n: int = 1, *, state: str = "firing", severity: str = "warning", event: int = 0, **changes: Any
) -> Alert:
    """Alert of account ``BINANCE-AAZ{n:02d}-UM``; ``event`` tells two events of it apart (same
    fingerprint, another id)."""
    account = f"BINANCE-AAZ{n:02d}-UM"
    fields: dict[str, Any] = {
        "id": f"delta-{n}-{state}-{event}",
        "check": "delta",
        "instance": "delta",
        "account": account,
        "state": state,
        "severity": severity,
        "keys": ["BTCUSDT"],
        "title": f"Delta breach on {account}",
        "text": f"BTCUSDT delta 1.{n:02d} BTC is over the 0.5 BTC limit.",
        "observed_at": 1_700_000_000.0 + event,
        "emitted_at": 1_700_000_000.5 + event,
        "labels": {"check": "delta", "account": account},
    }
    return Alert.model_validate({**fields, **changes})


def group(
    alerts: Sequence[Alert],
    *,
    new: Sequence[Alert] | None = None,
    version: int = 1,
    repeat: bool = False,
    labels: dict[str, str] | None = None,
    key: str = GROUP_KEY,
) -> Notification:
    """A notification of ``alerts`` (all new unless ``new`` says otherwise)."""
    return Notification(
        group_key=key,
        receiver="desk",
        group_labels={"check": "delta"} if labels is None else labels,
        alerts=tuple(alerts),
        new=tuple(alerts if new is None else new),
        repeat=repeat,
        version=version,
    )


def storm(count: int, **changes: Any) -> Notification:
    return group([make_alert(i, **changes) for i in range(1, count + 1)])


def section_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "section"]


def assert_within_limits(blocks: list[dict[str, Any]]) -> None:
    """What the stand-in (and Slack) accept, plus the total MonitorX keeps under."""
    assert len(blocks) <= BLOCKS_LIMIT
    for block in blocks:
        assert len(block["text"]["text"]) <= TEXT_LIMITS[block["type"]], block["type"]
    assert sum(len(b["text"]["text"]) for b in blocks) <= layout.MESSAGE_CHARS


def test_twelve_accounts_one_section_each_in_order() -> None:
    n = storm(12)
    text, blocks = layout.group_message(n)
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[FIRING 12] delta", "emoji": True},
    }
    sections = section_texts(blocks)
    assert len(blocks) == 13 and len(sections) == 12
    for i, body in enumerate(sections, start=1):
        assert body.startswith(f":red_circle: *[FIRING] Delta breach on BINANCE-AAZ{i:02d}-UM*\n")
        assert f"delta 1.{i:02d} BTC" in body and f"*account* `BINANCE-AAZ{i:02d}-UM`" in body
    assert text.startswith(":red_circle: [FIRING 12] delta: BINANCE-AAZ01-UM, BINANCE-AAZ02-UM")
    assert "BINANCE-AAZ12-UM" in text
    assert layout.overflow_text(n) == [] and layout.overflow_digest(n) == ""
    assert_within_limits(blocks)


def test_eighty_accounts_show_the_first_and_and_n_more() -> None:
    n = storm(80)
    _, blocks = layout.group_message(n)
    assert_within_limits(blocks)
    *accounts, more = section_texts(blocks)
    hidden = 80 - len(accounts)
    assert hidden > 0 and len(blocks) <= 50
    assert more == f"… and {hidden} more accounts: the full list is in the thread"
    assert [s.split("Delta breach on ")[1][:16] for s in accounts] == [
        f"BINANCE-AAZ{i:02d}-UM" for i in range(1, len(accounts) + 1)
    ]
    chunks = layout.overflow_text(n)
    assert chunks and all(len(c) <= layout.SECTION_CHARS for c in chunks)
    listed = "\n\n".join(chunks)
    for i in range(1, 81):
        title = f"Delta breach on BINANCE-AAZ{i:02d}-UM*"
        assert listed.count(title) == (0 if i <= len(accounts) else 1), i
    assert layout.overflow_digest(n) != ""


def test_over_the_block_count_alone_the_message_keeps_48_accounts() -> None:
    """Short sections: the 50-block limit, not the characters, decides."""
    n = group([make_alert(i, title="t", text="x") for i in range(1, 61)])
    _, blocks = layout.group_message(n)
    assert len(blocks) == 50 and section_texts(blocks)[-1].startswith("… and 12 more accounts")
    assert_within_limits(blocks)
    exactly = group([make_alert(i, title="t", text="x") for i in range(1, 50)])
    assert len(layout.group_message(exactly)[1]) == 50 and layout.overflow_text(exactly) == []


def test_a_5000_character_text_is_cut_to_the_section_limit() -> None:
    n = group([make_alert(1, text="9" * 5000)])
    _, blocks = layout.group_message(n)
    [body] = section_texts(blocks)
    assert len(body) == 3000 and body.endswith("…") and body.startswith(":red_circle: *[FIRING]")
    many = group([make_alert(i, text="9" * 5000) for i in range(1, 13)])
    _, blocks = layout.group_message(many)
    assert_within_limits(blocks)
    chunks = layout.overflow_text(many)
    shown = len(section_texts(blocks)) - 1
    assert len(chunks) == 12 - shown and all(len(c) == 3000 for c in chunks)


def test_header_resolved_and_long_subjects() -> None:
    both = group([make_alert(1), make_alert(2, state="resolved")])
    assert layout.header_text(both) == "[FIRING 1] delta"
    done = group([make_alert(1, state="resolved"), make_alert(2, state="resolved")])
    text, blocks = layout.group_message(done)
    assert blocks[0]["text"]["text"] == "[RESOLVED] delta"
    assert text.startswith(":large_green_circle: [RESOLVED] delta")
    assert section_texts(blocks)[0].startswith(":large_green_circle: *[RESOLVED] Delta breach")
    long = group([make_alert(1)], labels={"desk": "d" * 300, "check": "delta"})
    header = layout.header_text(long)
    assert len(header) == 150 and header.startswith("[FIRING 1] delta · ddd") and header.endswith("…")
    mixed = group([make_alert(1), make_alert(2, check="low_balance")], labels={})
    assert layout.header_text(mixed) == "[FIRING 2] delta · low_balance"


def test_text_is_escaped_as_slack_message_escapes() -> None:
    n = group([make_alert(1, title="A<B & C>", text="<!channel> & <@U1>")])
    [body] = section_texts(layout.group_message(n)[1])
    assert "*[FIRING] A&lt;B &amp; C&gt;*" in body and "&lt;!channel&gt; &amp; &lt;@U1&gt;" in body
    assert "<!channel>" not in body


def test_reply_message_lists_alerts_within_limits() -> None:
    alerts = [make_alert(i, severity="critical") for i in range(1, 81)]
    text, blocks = layout.reply_message(":repeat: *Still firing*", alerts)
    assert_within_limits(blocks)
    first, *_, more = section_texts(blocks)
    assert first == ":repeat: *Still firing*" and more.startswith("… and ") and "thread" not in more
    assert text.startswith(":repeat: *Still firing*: BINANCE-AAZ01-UM")


def test_severity_ranks() -> None:
    assert layout.highest_severity([make_alert(1), make_alert(2, severity="critical")]) == "critical"
    assert layout.highest_severity([]) is None
    assert layout.severity_rank(None) < layout.severity_rank("info") < layout.severity_rank("warning")
    assert layout.severity_rank("warning") < layout.severity_rank("critical")
