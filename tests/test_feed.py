"""Snapshot views derived lazily from the feed tables (``shared.feed``), the fast paths of
``parse_number`` and normalization, and the shared key layouts of a :class:`Normalizer`.

The eager normalizer and parser these replaced are kept here as oracles: the new code must give
exactly what they gave."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from typing import Any

import pytest

from engine.checks import delta
from ingestor.normalize import Normalizer, normalize_account
from shared.feed import KeyLayout, Layouts, classify
from shared.models import Position, Snapshot, parse_number, parse_values
from simulator.frames import FrameGenerator, preset

# ---------------------------------------------------------------- the oracles (previous code)


def old_parse_number(value: Any) -> tuple[float | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, bool):
        return None, "boolean"
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None, f"not a number: {value[:40]!r}"
    else:
        return None, f"unexpected {type(value).__name__}"
    if not math.isfinite(number):
        return None, "not finite"
    return number, None


def old_views(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What ``normalize_account`` stored in the (then serialized) view fields."""
    positions: dict[str, dict[str, float | None]] = {}
    assets: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    margins: dict[str, dict[str, float]] = {}
    for key, raw in obj.items():
        number, _ = old_parse_number(raw)
        kind, subject, field = classify(key)
        if kind == "position":
            positions.setdefault(subject, {})["size"] = number
        elif kind == "position_field":
            positions.setdefault(subject, {})[field] = number
        elif number is None:
            continue
        elif kind == "total":
            totals[field] = number
        elif kind == "asset":
            assets.setdefault(subject, {})[field] = number
        else:
            margins.setdefault(subject, {})[field] = number
    return {
        "positions": {s: Position(symbol=s, **f) for s, f in positions.items()},
        "assets": assets,
        "totals": totals,
        "symbol_margins": margins,
    }


def views(snap: Snapshot) -> dict[str, Any]:
    return {
        "positions": snap.positions,
        "assets": snap.assets,
        "totals": snap.totals,
        "symbol_margins": snap.symbol_margins,
    }


EDGES: dict[str, Any] = {
    "BTCUSDTAvg-Price": 100,  # a price before its size
    "BTCUSDT": "junk",
    "ETHUSDC": None,
    "ETHUSDCForce-Liquid-Price": "",
    "USDTwalletBalance": "  12000.5 ",
    "USDCwalletBalance": True,
    "BNBwalletBalance": 0,
    "XYZwalletBalance": 5,  # unknown asset, not a symbol-margin field: a position
    "BTC-USDTinitialMargin": "1e3",
    "BTCUSDTmaintMargin": float("nan"),
    "maintotalWalletBalance": 20000,
    "mainUSDT": 1,  # not a total: upper case after "main"
    "main": 2,
    "Avg-Price": 3,  # nothing before the suffix: a position
    "nested": {"a": 1},
    "listed": [1, 2],
}


def objects() -> list[dict[str, Any]]:
    generator = FrameGenerator(preset("demo", accounts=3, okx=True))
    found = [obj for t in (0.0, 4.0, 9.5) for obj in (generator.frame(t) or {"pos": {}})["pos"].values()]
    return [*found, EDGES, {}]


# ---------------------------------------------------------------- parse_number


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        -0.0,
        float("inf"),
        float("nan"),
        0,
        -7,
        True,
        False,
        None,
        "",
        "   ",
        " 2.5\n",
        "1_000",
        "nan",
        "-inf",
        "1e400",
        "١٢",
        "\u20031.5\u2003",
        "abc",
        "x" * 60,
        [1],
        {"a": 1},
    ],
)
def test_parse_number_is_unchanged(value: Any) -> None:
    try:
        expected: Any = old_parse_number(value)
    except OverflowError as exc:
        expected = type(exc)
    try:
        got: Any = parse_number(value)
    except OverflowError as exc:
        got = type(exc)
    assert repr(got) == repr(expected)


def test_parse_values_matches_parse_number() -> None:
    obj = EDGES
    values, invalid = parse_values(obj)
    expected = {k: old_parse_number(v) for k, v in obj.items()}
    assert values == {k: n for k, (n, why) in expected.items() if why is None and n is not None}
    assert invalid == {k: why for k, (_, why) in expected.items() if why is not None}
    assert list(values) == [k for k in obj if k in values]  # raw key order


# ---------------------------------------------------------------- lazy views


@pytest.mark.parametrize("obj", objects())
def test_views_are_those_the_eager_normalizer_stored(obj: dict[str, Any]) -> None:
    snap = normalize_account("BINANCE-AAZ01-UM", obj, 1.0)
    assert views(snap) == old_views(obj)
    assert list(snap.positions) == list(old_views(obj)["positions"])
    shared = Normalizer(trusted=True)("BINANCE-AAZ01-UM", obj, 1.0)
    assert views(shared) == old_views(obj)


def test_views_are_not_serialized_and_survive_a_round_trip() -> None:
    snap = normalize_account("A", {"BTCUSDT": 1, "BTCUSDTAvg-Price": 2, "USDTwalletBalance": 3}, 1.0)
    assert snap.positions["BTCUSDT"] == Position(symbol="BTCUSDT", size=1.0, avg_price=2.0)
    data = json.loads(snap.model_dump_json())
    assert set(data) == {"account", "venue", "source", "seq", "observed_at", "raw"}
    back = Snapshot.model_validate_json(snap.model_dump_json())
    assert back == snap
    assert views(back) == views(snap)


def test_a_snapshot_written_with_the_view_fields_still_loads() -> None:
    """``mx:latest`` written by an older ingestor carries the views and the parsed values as
    fields: they are dropped (and derived again from raw)."""
    snap = normalize_account("A", {"BTCUSDT": 1, "USDTwalletBalance": 3}, 1.0)
    old = {**snap.model_dump(mode="json"), **{k: {} for k in ("positions", "assets", "totals")}}
    old.update(symbol_margins={}, values={"USDTwalletBalance": 99.0}, invalid={"x": "junk"})
    back = Snapshot.model_validate_json(json.dumps(old))
    assert back == snap
    assert back.assets == {"USDT": {"walletBalance": 3.0}}


def test_a_copy_with_other_raw_derives_its_views_again() -> None:
    snap = normalize_account("A", {"BTCUSDT": 1}, 1.0)
    assert set(snap.positions) == {"BTCUSDT"}
    retimed = snap.model_copy(update={"observed_at": 2.0})
    assert retimed.feed_views is snap.feed_views
    other = snap.model_copy(update={"raw": {"ETHUSDT": 2}})
    assert set(other.positions) == {"ETHUSDT"}
    assert other.layout.keys == ("ETHUSDT",)


# ---------------------------------------------------------------- shared layouts


def test_a_normalizer_gives_what_normalize_account_gives() -> None:
    for obj in objects():
        expected = normalize_account("BINANCE-AAZ01-UM", obj, 3.0, seq=7)
        for trusted in (True, False):
            got = Normalizer(trusted)("BINANCE-AAZ01-UM", obj, 3.0, 7)
            assert got == expected
            assert repr(got) == repr(expected)
            assert got.model_dump_json() == expected.model_dump_json()


def test_an_int_out_of_float_range_is_an_invalid_value() -> None:
    # the one intended change from the old parser, which raised OverflowError (a crash)
    for normalize in (normalize_account, Normalizer(trusted=True)):
        snap = normalize("A", {"huge": 10**400, "ok": 1}, 1.0)
        assert snap.invalid == {"huge": "too large"} and snap.values == {"ok": 1.0}


def test_snapshots_with_the_same_keys_share_one_layout() -> None:
    normalize = Normalizer(trusted=True)
    first = normalize("A", {"BTCUSDT": 1, "BTCUSDC": -1, "BTCUSDTAvg-Price": 5}, 1.0)
    second = normalize("A", {"BTCUSDT": 2, "BTCUSDC": -2, "BTCUSDTAvg-Price": 6}, 2.0)
    reordered = normalize("A", {"BTCUSDC": -2, "BTCUSDT": 2, "BTCUSDTAvg-Price": 6}, 3.0)
    assert first.layout is second.layout
    assert reordered.layout is not first.layout
    assert first.layout.derived(delta.pairs) is second.layout.derived(delta.pairs)
    assert reordered.layout.derived(delta.pairs) == [("BTC", "BTCUSDC", "BTCUSDT")]
    params = delta.DeltaParams()
    alone = normalize_account("A", {"BTCUSDT": 2, "BTCUSDC": -2, "BTCUSDTAvg-Price": 6}, 2.0)
    assert delta.evaluate(second, params, 2.0) == delta.evaluate(alone, params, 2.0)


def test_layouts_start_again_past_their_limit() -> None:
    layouts = Layouts(limit=2)
    a = layouts.of(("a",))
    assert layouts.of(("a",)) is a
    layouts.of(("b",))
    layouts.of(("c",))
    assert layouts.of(("a",)) is not a


def test_a_layout_pickles_without_its_memos() -> None:
    layout = KeyLayout(("BTCUSDT", "BTCUSDC"))
    assert layout.derived(lambda keys: len(keys)) == 2
    back = pickle.loads(pickle.dumps(layout))
    assert back.keys == layout.keys
    assert back.classified == layout.classified
    snap = Normalizer(trusted=True)("A", {"BTCUSDT": 1}, 1.0)
    snap.layout.derived(lambda keys: keys)
    assert pickle.loads(pickle.dumps(snap)) == snap


def test_delta_pairs_are_unchanged() -> None:
    keys = ["BTCUSDT", "BTCUSDTAvg-Price", "BTCUSDC", "ETHUSDC", "USDT", "USDC", "XUSDTAvg-Price", "ETH"]
    assert delta.pairs(keys) == [("BTC", "BTCUSDT", "BTCUSDC"), ("", "USDT", "USDC")]
    assert delta.pairs([*keys, "BTCUSDT"]) == [("", "USDT", "USDC")]  # three legs: no pair


def test_an_integer_too_large_for_a_float_is_junk_not_a_crash() -> None:
    from shared.models import parse_number

    assert parse_number(10**400) == (None, "too large")
    assert parse_number(-(10**400)) == (None, "too large")
    assert parse_number(2**53) == (float(2**53), None)
