"""balance_report and margin_snapshot (spec sections 5 and 6): figures, shares of a zero total,
N/A and invalid figures, data age and accounts without data. Expected figures computed by hand."""

from __future__ import annotations

from typing import Any

import pytest

from engine.checks import balance_report, margin_snapshot
from ingestor.normalize import normalize_account
from shared.models import Snapshot

SLOT = 1714564800.0  # 2024-05-01 12:00:00 UTC
A1, A2, A3, A4 = (f"BINANCE-AAZ0{i}-UM" for i in range(1, 5))


def snap(account: str, obj: dict[str, Any], age: float = 5.0) -> Snapshot:
    return normalize_account(account, obj, observed_at=SLOT - age)


BAL1 = {
    "USDTwalletBalance": 12000.5,
    "USDCwalletBalance": "8000",
    "BNBwalletBalance": 5.1234,
    "maintotalWalletBalance": 20000.5,
}
BAL2 = {
    "USDTwalletBalance": 1234.567,
    "USDCwalletBalance": 0,
    "BNBwalletBalance": 0.5,
    "maintotalWalletBalance": 0,
}


def balance(snapshots: dict[str, Snapshot | None], **params: Any) -> str:
    message = balance_report.build(snapshots, balance_report.BalanceReportParams(**params), SLOT)
    assert message.title == "Balance report 12:00 UTC"
    return message.text


def block(out: str, head: str) -> list[str]:
    """The lines of the block starting with ``head`` (up to the next unindented line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if not line.startswith("  ")), len(rest))
    return [lines[start], *rest[:end]]


# ---------------------------------------------------------------- balance report


def test_balance_report_every_figure() -> None:
    out = balance({A1: snap(A1, BAL1), A2: snap(A2, BAL2)})
    assert out.splitlines()[0] == "Balance report 12:00 UTC"
    # A1: 12000.5 / 20000.5 = 0.60001 -> "60.0%"; 8000 / 20000.5 = 0.39999 -> "40.0%"; BNB "5.1234"
    assert block(out, A1) == [
        A1,
        "  USDT: $12,000.50 (60.0%)",
        "  USDC: $8,000.00 (40.0%)",
        "  BNB: 5.1234",
        "  TOTAL: $20,000.50",
    ]
    # A2: total 0 -> shares 0 -> "0.0%"
    assert block(out, A2)[1:3] == ["  USDT: $1,234.57 (0.0%)", "  USDC: $0.00 (0.0%)"]
    # sums: USDT 12000.5 + 1234.567 = 13235.067 (/ 20000.5 = 0.66174 -> "66.2%"), USDC 8000 (40.0%),
    # BNB 5.1234 + 0.5 = 5.6234, TOTAL 20000.5 + 0 = 20000.5
    assert block(out, "All accounts") == [
        "All accounts (2 with data)",
        "  USDT: $13,235.07 (66.2%)",
        "  USDC: $8,000.00 (40.0%)",
        "  BNB: 5.6234",
        "  TOTAL: $20,000.50",
    ]


def test_balance_report_bnb_commas_and_missing_keys_as_zero() -> None:
    out = balance({A1: snap(A1, {"BNBwalletBalance": "1234.56789"})})
    # 1234.56789 -> ",.4f" -> "1,234.5679"; missing USDT, USDC, total -> 0, shares 0
    assert block(out, A1)[1:] == [
        "  USDT: $0.00 (0.0%)",
        "  USDC: $0.00 (0.0%)",
        "  BNB: 1,234.5679",
        "  TOTAL: $0.00",
    ]


def test_balance_report_stale_data_and_accounts_without_data() -> None:
    out = balance({A1: snap(A1, BAL1, age=600), A2: snap(A2, BAL2, age=60), A3: None}, stale_after=60)
    # 600 s old at 12:00:00 -> observed 11:50:00; 60 s is not older than 60
    assert f"{A1} (data from 2024-05-01 11:50:00 UTC, 10m 00s old)" in out.splitlines()
    assert A2 in out.splitlines()
    assert out.splitlines()[-1] == f"No data: {A3}"
    assert "All accounts (2 with data)" in out


def test_balance_report_one_bad_account_does_not_kill_the_report() -> None:
    out = balance({A1: snap(A1, BAL1), A4: snap(A4, {**BAL1, "USDTwalletBalance": "12k"})})
    assert block(out, A4)[1:3] == ["  USDT: invalid", "  USDC: $8,000.00 (40.0%)"]
    assert "  Unreadable: USDTwalletBalance (not a number: '12k')" in out.splitlines()
    # sums leave A4's USDT out: 12000.5; USDC 8000 + 8000 = 16000 of 40001 -> 39.99% -> "40.0%"
    totals = block(out, "All accounts")
    assert totals[1:3] == ["  USDT: $12,000.50 (30.0%)", "  USDC: $16,000.00 (40.0%)"]
    assert totals[-1] == f"  Sums leave out the unreadable figures of: {A4}"


def test_balance_report_invalid_total() -> None:
    out = balance({A1: snap(A1, {**BAL1, "maintotalWalletBalance": True})})
    assert block(out, A1)[1:] == [
        "  USDT: $12,000.50 (invalid)",
        "  USDC: $8,000.00 (invalid)",
        "  BNB: 5.1234",
        "  TOTAL: invalid",
        "  Unreadable: maintotalWalletBalance (boolean)",
    ]


def test_balance_report_without_accounts() -> None:
    assert balance({}).splitlines() == [
        "Balance report 12:00 UTC",
        "All accounts (0 with data)",
        "  USDT: $0.00 (0.0%)",
        "  USDC: $0.00 (0.0%)",
        "  BNB: 0.0000",
        "  TOTAL: $0.00",
    ]


# ---------------------------------------------------------------- margin snapshot

MARGIN = {
    "maintotalWalletBalance": 10000,
    "maintotalInitialMargin": 2000,
    "maintotalMaintMargin": 500,
    "maintotalPositionInitialMargin": 1800,
    "mainmaxWithdrawAmount": 7000,
    "BTCUSDTinitialMargin": 1000,
    "BTCUSDTmaintMargin": 50,
    "BTCUSDTcrossUnPnl": "-12.3",
    "ETH-USDCinitialMargin": 1234.5,
    "USDTwalletBalance": 6000,
    "USDTinitialMargin": 1000,
    "USDTmaintMargin": 40,
    "USDTunrealizedProfit": -5.555,
    "USDTmarginBalance": 5994.445,
    "USDTpositionInitialMargin": 900,
    "USDTopenOrderInitialMargin": 100,
    "USDTavailableBalance": 4994.445,
    "USDTmaxWithdrawAmount": 4990,
    "USDCwalletBalance": 4000,
    "BTCavailableBalance": 0.5,
}


def margin(snapshots: dict[str, Snapshot | None]) -> str:
    return margin_snapshot.build(snapshots, margin_snapshot.MarginSnapshotParams(), SLOT).text


def test_margin_snapshot_every_figure() -> None:
    lines = margin({A1: snap(A1, MARGIN)}).splitlines()
    assert lines == [
        f"{A1} at 12:00 UTC",
        "Wallet: $10,000.00",
        "Initial margin: $2,000.00 (20.00%)",  # 2000 / 10000
        "Maintenance margin: $500.00 (5.00%)",  # 500 / 10000
        "Position initial margin: $1,800.00 (18.00%)",  # 1800 / 10000
        "Max withdrawable: $7,000.00 (70.00%)",  # 7000 / 10000
        "Symbols:",
        "  BTCUSDT: initial $1,000.00, maintenance $50.00, unrealised PnL $-12.30",
        "  ETH-USDC: initial $1,234.50, maintenance N/A, unrealised PnL N/A",
        "Assets:",
        # binary floats, not Decimal half-up: -5.555 is -5.55499999... -> "-5.55";
        # 5994.445 and 4994.445 are ...44499999999970896 -> "5,994.44", "4,994.44" (half-up: .45)
        "  USDT: walletBalance $6,000.00, initialMargin $1,000.00, maintMargin $40.00, "
        "unrealizedProfit $-5.55, marginBalance $5,994.44, positionInitialMargin $900.00, "
        "openOrderInitialMargin $100.00, availableBalance $4,994.44, maxWithdrawAmount $4,990.00",
        "  USDC: walletBalance $4,000.00, initialMargin N/A, maintMargin N/A, unrealizedProfit N/A, "
        "marginBalance N/A, positionInitialMargin N/A, openOrderInitialMargin N/A, availableBalance N/A, "
        "maxWithdrawAmount N/A",
        # BTC has only availableBalance: not shown
        "USDT/USDC split: USDT 60.00%, USDC 40.00%",  # 6000 / 10000, 4000 / 10000
    ]


def test_margin_snapshot_wallet_zero_and_empty_split() -> None:
    obj = {"maintotalWalletBalance": 0, "maintotalInitialMargin": 5, "BTCinitialMargin": 0}
    lines = margin({A1: snap(A1, obj)}).splitlines()
    assert lines[1:6] == [
        "Wallet: $0.00",
        "Initial margin: $5.00 (N/A)",
        "Maintenance margin: $0.00 (N/A)",
        "Position initial margin: $0.00 (N/A)",
        "Max withdrawable: $0.00 (N/A)",
    ]
    assert lines[6] == "Assets:" and lines[7].startswith("  BTC: walletBalance N/A, initialMargin $0.00,")
    assert lines[-1] == "USDT/USDC split: USDT N/A, USDC N/A"


def test_margin_snapshot_invalid_stale_and_missing_accounts() -> None:
    bad = {**MARGIN, "maintotalMaintMargin": "?", "USDCwalletBalance": "junk"}
    out = margin({A1: snap(A1, MARGIN), A2: snap(A2, bad, age=3600), A3: None})
    sections = out.split("\n\n")
    assert sections[0] == margin({A1: snap(A1, MARGIN)})  # the good account is untouched
    second = sections[1].splitlines()
    assert second[0] == f"{A2} at 12:00 UTC (data from 2024-05-01 11:00:00 UTC, 1h 00m old)"
    assert "Maintenance margin: invalid" in second
    assert "  USDC: walletBalance invalid," in "\n".join(second)
    assert "USDT/USDC split: USDT invalid, USDC invalid" in second
    assert (
        second[-1]
        == "Unreadable: maintotalMaintMargin (not a number: '?'); USDCwalletBalance (not a number: 'junk')"
    )
    assert sections[2] == f"{A3}: no data"


def test_margin_snapshot_one_message_per_account_available() -> None:
    each = margin_snapshot.build_each(
        {A1: snap(A1, MARGIN), A3: None}, margin_snapshot.MarginSnapshotParams(), SLOT
    )
    assert [(a, m.title) for a, m in each] == [
        (A1, f"Margin snapshot 12:00 UTC: {A1}"),
        (A3, f"Margin snapshot 12:00 UTC: {A3}"),
    ]
    assert each[1][1].text == f"{A3}: no data"


@pytest.mark.parametrize("spec", [balance_report.SPEC, margin_snapshot.SPEC])
def test_report_specs(spec: Any) -> None:
    assert spec.default_schedule == ("0 0,6,12,18 * * *",)
    assert spec.params().stale_after == 60
