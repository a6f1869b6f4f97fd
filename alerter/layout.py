"""Block Kit rendering of a group's notification: one Slack message for many alerts.

A message is a header (``[FIRING 12] delta``, ``[RESOLVED] delta``) and one section per account
listing that account's alerts as the single-alert message of ``alerter.sinks.slack_message``
shows them (state and title, the text with its figures, check, account and severity), escaped
the same way. Accounts come in the order of ``Notification.alerts`` (firing first).

Slack refuses a message over its limits (``invalid_blocks``): at most :data:`MAX_BLOCKS`
blocks, a section's text at most :data:`SECTION_CHARS` characters, a header's
:data:`HEADER_CHARS`; it also refuses some messages whose blocks add up to about 13,000
characters (``msg_blocks_too_long``), so a message keeps its blocks' text within
:data:`MESSAGE_CHARS`. A group that does not fit shows its first accounts and a last section
"and N more accounts"; :func:`overflow_text` gives the accounts left out, in chunks of at most
:data:`SECTION_CHARS` characters, for replies in the message's thread. A section longer than
its limit (one account's alerts, a very long text) is cut and ends with ``…``.

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alerter.notify import Notification
from alerter.sinks import slack_escape
from shared.models import Alert

MAX_BLOCKS = 50
"""Slack's most blocks in one message."""
SECTION_CHARS = 3_000
"""Slack's longest text of a section block; also the longest thread reply of the overflow."""
HEADER_CHARS = 150
"""Slack's longest text of a header block."""
MESSAGE_CHARS = 12_000
"""Most characters of block text in one message: below the ~13,000 at which Slack refuses some
messages with ``msg_blocks_too_long`` although every block is within its own limit."""
FALLBACK_CHARS = 4_000
"""Longest fallback ``text`` (what notifications and screen readers show), as ``slack_message``."""
MORE_CHARS = 100
"""Characters kept free in a message for its "and N more" section."""
ELLIPSIS = "…"
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
"""Severities from lowest to highest."""

Block = dict[str, Any]


@dataclass(frozen=True)
class _Account:
    """One account's alerts and the mrkdwn text of its section (already cut to its limit)."""

    account: str
    alerts: tuple[Alert, ...]
    text: str


@dataclass(frozen=True)
class _Plan:
    shown: tuple[_Account, ...]
    hidden: tuple[_Account, ...]


def group_message(n: Notification, *, thread: bool = True) -> tuple[str, list[Block]]:
    """Fallback text plus Block Kit for the whole group (``n.alerts``): a header, a section per
    account, and when the group does not fit a last section "and N more accounts" (saying the
    full list is in the thread unless ``thread`` is False: an incoming webhook has none). Every
    block is within Slack's limits (see the module docstring)."""
    header = header_text(n)
    plan = _plan(n.alerts, reserve_chars=len(header), reserve_blocks=1)
    blocks = [_header_block(header), *(_section(a.text) for a in plan.shown)]
    if plan.hidden:
        blocks.append(_section(_more(len(plan.hidden), thread)))
    icon = ":red_circle:" if n.firing else ":large_green_circle:"
    accounts = ", ".join(dict.fromkeys(a.account for a in n.alerts))
    return _cut(f"{icon} {slack_escape(header)}: {slack_escape(accounts)}", FALLBACK_CHARS), blocks


def overflow_text(n: Notification) -> list[str]:
    """The sections of the accounts :func:`group_message` leaves out, packed in order into
    mrkdwn chunks of at most :data:`SECTION_CHARS` characters (each account whole in one chunk);
    empty when the whole group fits."""
    header = header_text(n)
    return _chunks([a.text for a in _plan(n.alerts, len(header), 1).hidden])


def overflow_digest(n: Notification) -> str:
    """A short digest of which alerts (fingerprint and state) :func:`group_message` leaves out;
    ``""`` when none. Equal digests: the thread's list of them needs no new reply."""
    hidden = _plan(n.alerts, len(header_text(n)), 1).hidden
    parts = sorted(f"{a.fingerprint}:{a.state}" for acc in hidden for a in acc.alerts)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16] if parts else ""


def reply_message(note: str, alerts: Sequence[Alert]) -> tuple[str, list[Block]]:
    """A thread reply: a first section with ``note`` (mrkdwn, given escaped), then a section
    per account of ``alerts`` within Slack's limits ("and N more accounts" past them)."""
    first = _cut(note, SECTION_CHARS)
    plan = _plan(tuple(alerts), reserve_chars=len(first), reserve_blocks=1)
    blocks = [_section(first), *(_section(a.text) for a in plan.shown)]
    if plan.hidden:
        blocks.append(_section(_more(len(plan.hidden), thread=False)))
    accounts = ", ".join(dict.fromkeys(a.account for a in alerts))
    return _cut(f"{first}: {slack_escape(accounts)}", FALLBACK_CHARS), blocks


def header_text(n: Notification) -> str:
    """``[FIRING k] subject`` (k: firing alerts) or ``[RESOLVED] subject`` when none fires, at
    most :data:`HEADER_CHARS` characters. The subject is the group's label values (``check``
    first, then by label name, joined by `` · ``), or, for a group without labels, its checks."""
    labels = n.group_labels
    values = [labels[k] for k in sorted(labels, key=lambda k: (k != "check", k)) if labels[k]]
    subject = " · ".join(values or dict.fromkeys(a.check for a in n.alerts))
    state = f"[FIRING {len(n.firing)}]" if n.firing else "[RESOLVED]"
    return _cut(f"{state} {subject}".rstrip(), HEADER_CHARS)


def highest_severity(alerts: Sequence[Alert]) -> str | None:
    """The highest severity among ``alerts`` (see :data:`SEVERITY_RANK`); None when empty."""
    return max((a.severity for a in alerts), key=severity_rank, default=None)


def severity_rank(severity: str | None) -> int:
    """A severity's place in :data:`SEVERITY_RANK`; -1 for None (nothing shown) or unknown."""
    return SEVERITY_RANK.get(severity or "", -1)


def alert_text(alert: Alert) -> str:
    """One alert in mrkdwn: icon and ``[STATE] title`` in bold, the text, then the identifiers
    line of ``slack_message``; escaped as ``slack_message`` escapes."""
    icon = ":red_circle:" if alert.state == "firing" else ":large_green_circle:"
    headline = f"[{alert.state.upper()}] {alert.title}"
    details = f"*check* `{alert.check}` · *account* `{alert.account}` · *severity* {alert.severity}"
    return f"{icon} *{slack_escape(headline)}*\n{slack_escape(alert.text)}\n{slack_escape(details)}"


def _accounts(alerts: Sequence[Alert]) -> list[_Account]:
    """Alerts by account, accounts in order of their first alert, each with its section text."""
    by_account: dict[str, list[Alert]] = {}
    for alert in alerts:
        by_account.setdefault(alert.account, []).append(alert)
    return [
        _Account(account, tuple(group), _cut("\n\n".join(map(alert_text, group)), SECTION_CHARS))
        for account, group in by_account.items()
    ]


def _plan(alerts: Sequence[Alert], reserve_chars: int, reserve_blocks: int) -> _Plan:
    """Which accounts a message shows: all when they fit next to ``reserve_blocks`` blocks of
    ``reserve_chars`` characters; else the first ones that fit with room left for "and N more"."""
    accounts = _accounts(alerts)
    room_blocks = MAX_BLOCKS - reserve_blocks
    if len(accounts) <= room_blocks and reserve_chars + sum(len(a.text) for a in accounts) <= MESSAGE_CHARS:
        return _Plan(tuple(accounts), ())
    used, shown = reserve_chars + MORE_CHARS, 0
    for account in accounts:
        if shown == room_blocks - 1 or used + len(account.text) > MESSAGE_CHARS:
            break
        used, shown = used + len(account.text), shown + 1
    return _Plan(tuple(accounts[:shown]), tuple(accounts[shown:]))


def _chunks(texts: Sequence[str]) -> list[str]:
    """``texts`` (each at most SECTION_CHARS) packed in order into chunks of at most SECTION_CHARS,
    separated by blank lines."""
    chunks: list[str] = []
    for text in texts:
        if chunks and len(chunks[-1]) + 2 + len(text) <= SECTION_CHARS:
            chunks[-1] += "\n\n" + text
        else:
            chunks.append(text)
    return chunks


def _more(count: int, thread: bool) -> str:
    where = ": the full list is in the thread" if thread else ""
    return f"{ELLIPSIS} and {count} more account{'s' if count != 1 else ''}{where}"


def _header_block(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _cut(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start ending in ``…`` (``limit`` long)."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS
