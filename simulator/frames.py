"""Deterministic Galio frames: accounts with healthy figures and scripted incidents.

A frame is a pure function of a :class:`Scenario` and the elapsed time ``t`` (seconds since the
simulator started): the same scenario and ``t`` always give the same frame. Every random draw
comes from a ``random.Random`` seeded with the scenario's seed, the account and ``t``.

Healthy figures wander within fixed bounds (a smooth seeded wave plus per-frame jitter) that keep
them clear of the legacy thresholds: USDT and USDC wallet balances stay between about 27,000 and
57,000, BNB between 7 and 17, USDT/USDC between 0.8 and 1.45, initial and position-initial margin
under 30 % of the wallet, maintenance margin under 3 %, the legs of every pair within $75 of each
other (Binance) or exactly hedged (OKX). Only the scripted incidents cross a threshold:

- low balance: from ``low_at``, account ``low_account``'s ``USDTwalletBalance`` sits between
  1,900 and 8,400, and the account's figures follow (so its USDT/USDC ratio falls under 0.6, a
  margin-risk breach too, while its margin ratios stay healthy);
- pause: from ``pause_at`` for ``pause_for`` seconds there is no frame at all;
- delta drift: from ``delta_at``, account ``delta_account``'s ``BTCUSDC`` leg is 10 % smaller
  than its ``BTCUSDT`` leg (a delta of more than $1,000).

With ``still_wallets`` (the ``quiet`` preset) wallet balances stay put while the market moves, as
on a quiet desk between realized PnL, funding and transfers: see :attr:`Scenario.still_wallets`.
"""

from __future__ import annotations

import json
import math
import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

Value = float | int | str
AccountObject = dict[str, Value]
Frame = dict[str, dict[str, AccountObject]]
Emit = Callable[[str, float, int], Value]

OKX_ACCOUNT = "OKX-AAZ-TRADING"
OKX_CONTRACT_SIZES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "ETH": MappingProxyType({"USDT": 0.1, "USDC": 0.001}),
        "BTC": MappingProxyType({"USDT": 0.01, "USDC": 0.0001}),
    }
)
"""Contract value in base units per OKX swap, by base and margin asset (the legacy configuration)."""

LEVERAGE = 20.0
"""Initial margin of a position = notional / LEVERAGE."""

TAU = 2 * math.pi

_PRESET_FIELDS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "demo": MappingProxyType({"low_at": 3.0, "pause_at": 8.0, "pause_for": 20.0}),
        "steady": MappingProxyType({}),
        "bench": MappingProxyType({}),
        "quiet": MappingProxyType({"accounts": 12, "okx": False, "still_wallets": True}),
    }
)
PRESETS: tuple[str, ...] = tuple(_PRESET_FIELDS)

ASSET_TOTALS: tuple[tuple[str, str], ...] = (
    ("totalWalletBalance", "walletBalance"),
    ("totalUnrealizedProfit", "unrealizedProfit"),
    ("totalMarginBalance", "marginBalance"),
    ("totalInitialMargin", "initialMargin"),
    ("totalMaintMargin", "maintMargin"),
    ("totalPositionInitialMargin", "positionInitialMargin"),
    ("totalOpenOrderInitialMargin", "openOrderInitialMargin"),
    ("totalCrossWalletBalance", "crossWalletBalance"),
    ("totalCrossUnPnl", "crossUnPnl"),
    ("availableBalance", "availableBalance"),
    ("maxWithdrawAmount", "maxWithdrawAmount"),
)
"""``main<total>`` key suffix -> the per-asset field it sums over USDT and USDC."""


def binance_account(index: int) -> str:
    """``1`` -> ``BINANCE-AAZ01-UM``."""
    return f"BINANCE-AAZ{index:02d}-UM"


@dataclass(frozen=True)
class Scenario:
    """Accounts and scripted incidents. Times are seconds since the simulator started; an
    incident whose time is None does not happen. Accounts are numbered from 1."""

    accounts: int = 3
    """Number of Binance USD-M accounts, ``BINANCE-AAZ01-UM`` onwards."""
    okx: bool = True
    """Also send ``OKX-AAZ-TRADING`` (hedged ETH and BTC swaps)."""
    seed: int = 0
    low_at: float | None = None
    low_account: int = 1
    pause_at: float | None = None
    pause_for: float = 0.0
    delta_at: float | None = None
    delta_account: int = 2
    string_share: float = 0.25
    """Share of balance and margin values sent as numeric strings, as Galio does."""
    still_wallets: bool = False
    """Wallet balances (``<ASSET>walletBalance``, ``<ASSET>crossWalletBalance``, their ``main``
    totals, and BNB's figures, which are its balance) stay at the account's level on every frame
    (``low_at`` moves USDT to the low level and keeps it there), while prices, marks, unrealized
    PnL and margins move as usual. Every figure of an account then keeps its form, number or
    numeric string, from frame to frame, so a figure that did not change is sent byte for byte
    the same. False: every balance wanders and each value's form is drawn per frame."""

    def __post_init__(self) -> None:
        if self.accounts < 0:
            raise ValueError("accounts must be >= 0")
        if self.pause_for < 0:
            raise ValueError("pause_for must be >= 0")
        if not 0.0 <= self.string_share <= 1.0:
            raise ValueError("string_share must be between 0 and 1")
        for label, index, at in (
            ("low_account", self.low_account, self.low_at),
            ("delta_account", self.delta_account, self.delta_at),
        ):
            if at is not None and not 1 <= index <= self.accounts:
                raise ValueError(f"{label} {index} is not one of the {self.accounts} Binance accounts")

    def paused(self, t: float) -> bool:
        """True while the feed sends nothing."""
        return self.pause_at is not None and self.pause_at <= t < self.pause_at + self.pause_for

    def low(self, index: int, t: float) -> bool:
        """True when Binance account ``index``'s USDT balance is low at ``t``."""
        return index == self.low_account and _since(self.low_at, t)

    def drifting(self, index: int, t: float) -> bool:
        """True when Binance account ``index``'s BTC legs are out of balance at ``t``."""
        return index == self.delta_account and _since(self.delta_at, t)


def _since(at: float | None, t: float) -> bool:
    return at is not None and t >= at


def preset(name: str, **overrides: Any) -> Scenario:
    """A named scenario with field overrides: ``demo`` (low balance on account 1 at 3 s, no frames
    from 8 s to 28 s), ``steady`` (no incident), ``bench`` (no incident, meant to be streamed
    as fast as possible) and ``quiet`` (a quiet desk: 12 Binance accounts, no OKX, no incident,
    still wallets; ``monitorx bench --scenario quiet-desk`` streams it at 5 Hz)."""
    if name not in _PRESET_FIELDS:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(PRESETS)}")
    return Scenario(**{**_PRESET_FIELDS[name], **overrides})


@dataclass(frozen=True)
class _Wave:
    """A smooth wander in [-1, 1]: two sines with seeded periods and phases."""

    slow_period: float
    slow_phase: float
    fast_period: float
    fast_phase: float

    @classmethod
    def draw(cls, rng: random.Random) -> _Wave:
        return cls(rng.uniform(60, 600), rng.uniform(0, TAU), rng.uniform(5, 60), rng.uniform(0, TAU))

    def at(self, t: float) -> float:
        slow = math.sin(TAU * t / self.slow_period + self.slow_phase)
        return 0.6 * slow + 0.4 * math.sin(TAU * t / self.fast_period + self.fast_phase)


def _move(wave: _Wave, rng: random.Random, t: float) -> float:
    """The wave at ``t`` plus this frame's jitter, still in [-1, 1]."""
    return 0.8 * wave.at(t) + 0.2 * rng.uniform(-1.0, 1.0)


@dataclass(frozen=True)
class _Pair:
    """A hedged Binance pair: ``<base>USDT`` of ``size`` (signed) and ``<base>USDC`` of the
    opposite sign, ``gap`` smaller in magnitude."""

    base: str
    size: float
    gap: float
    decimals: int
    price: float
    maint_rate: float
    wave: _Wave
    mark_wave: _Wave


@dataclass(frozen=True)
class _Leg:
    """One position at one frame."""

    symbol: str
    asset: str
    size: float
    avg_price: float
    mark_price: float
    maint_rate: float

    @property
    def notional(self) -> float:
        return abs(self.size) * self.mark_price

    @property
    def initial_margin(self) -> float:
        return self.notional / LEVERAGE

    @property
    def maint_margin(self) -> float:
        return self.notional * self.maint_rate

    @property
    def unrealized(self) -> float:
        return self.size * (self.mark_price - self.avg_price)


@dataclass(frozen=True)
class _Binance:
    """The fixed part of one Binance account, drawn once from the seed."""

    account: str
    index: int
    usdt: float
    usdc: float
    bnb: float
    low_usdt: float
    order_share: float
    pairs: tuple[_Pair, ...]
    usdt_wave: _Wave
    usdc_wave: _Wave
    bnb_wave: _Wave


@dataclass(frozen=True)
class _Balances:
    usdt: float
    usdc: float
    bnb: float


@dataclass(frozen=True)
class _Swap:
    """A hedged OKX pair: ``<base>-USDT-SWAP`` of ``lots`` contracts (signed) and
    ``<base>-USDC-SWAP`` holding the same base amount on the other side."""

    base: str
    lots: int
    price: float
    wave: _Wave


def _profile_rng(seed: int, account: str) -> random.Random:
    return random.Random(f"{seed}:{account}:profile")


def _frame_rng(seed: int, account: str, t: float) -> random.Random:
    return random.Random(f"{seed}:{account}:{round(t * 1_000_000)}")


def _draw_pair(rng: random.Random, base: str) -> _Pair:
    if base == "BTC":
        size, gap, decimals, price, rate = rng.uniform(0.2, 1.0), 0.001, 3, rng.uniform(60000, 68000), 0.004
    else:
        size, gap, decimals, price, rate = rng.uniform(3.0, 15.0), 0.01, 2, rng.uniform(3000, 3600), 0.005
    sign = rng.choice((1.0, -1.0))
    return _Pair(
        base=base,
        size=sign * round(size, decimals),
        gap=rng.choice((0.0, gap)),
        decimals=decimals,
        price=round(price, 2),
        maint_rate=rate,
        wave=_Wave.draw(rng),
        mark_wave=_Wave.draw(rng),
    )


def _draw_binance(seed: int, index: int) -> _Binance:
    account = binance_account(index)
    rng = _profile_rng(seed, account)
    usdc = rng.uniform(30000, 42000)
    return _Binance(
        account=account,
        index=index,
        usdt=usdc * rng.uniform(0.95, 1.3),
        usdc=usdc,
        bnb=rng.uniform(8.0, 15.0),
        low_usdt=rng.uniform(2000, 8000),
        order_share=rng.uniform(0.0, 0.05),
        pairs=(_draw_pair(rng, "BTC"), _draw_pair(rng, "ETH")),
        usdt_wave=_Wave.draw(rng),
        usdc_wave=_Wave.draw(rng),
        bnb_wave=_Wave.draw(rng),
    )


def _draw_okx(seed: int) -> tuple[_Swap, ...]:
    rng = _profile_rng(seed, OKX_ACCOUNT)
    sign = rng.choice((1, -1))
    eth = _Swap("ETH", sign * rng.randint(20, 60), round(rng.uniform(3000, 3600), 2), _Wave.draw(rng))
    btc = _Swap("BTC", sign * rng.randint(5, 20), round(rng.uniform(60000, 68000), 2), _Wave.draw(rng))
    return (eth, btc)


class FrameGenerator:
    """Frames of one scenario; the per-account constants are drawn once, at construction."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._binance = tuple(_draw_binance(scenario.seed, i) for i in range(1, scenario.accounts + 1))
        self._okx = _draw_okx(scenario.seed) if scenario.okx else ()

    def frame(self, t: float) -> Frame | None:
        """The frame at ``t`` seconds, or None while the scenario pauses the feed."""
        if self.scenario.paused(t):
            return None
        pos = {b.account: _binance_object(b, self.scenario, t) for b in self._binance}
        if self._okx:
            pos[OKX_ACCOUNT] = _okx_object(self._okx, self.scenario.seed, t)
        return {"pos": pos}

    def text(self, t: float) -> str | None:
        """The frame at ``t`` as the text Galio would send, or None during a pause."""
        frame = self.frame(t)
        return None if frame is None else json.dumps(frame)


def frame_at(scenario: Scenario, t: float) -> Frame | None:
    """The frame of ``scenario`` at ``t`` (seconds since start), or None during a pause."""
    return FrameGenerator(scenario).frame(t)


def _binance_object(profile: _Binance, scenario: Scenario, t: float) -> AccountObject:
    rng = _frame_rng(scenario.seed, profile.account, t)
    low = scenario.low(profile.index, t)
    balances = _still_balances(profile, low) if scenario.still_wallets else _balances(profile, low, rng, t)
    legs = _legs(profile, scenario.drifting(profile.index, t), rng, t)
    obj = _positions(legs)
    assets = {
        "USDT": _stable_asset("USDT", balances.usdt, legs, profile.order_share),
        "USDC": _stable_asset("USDC", balances.usdc, legs, profile.order_share),
        "BNB": _bnb_asset(balances.bnb),
    }
    fixed = f"{scenario.seed}:{profile.account}" if scenario.still_wallets else None
    emit = _emitter(rng, scenario.string_share, fixed)
    for asset, fields in assets.items():
        decimals = 8 if asset == "BNB" else 2
        obj.update(
            {f"{asset}{field}": emit(f"{asset}{field}", value, decimals) for field, value in fields.items()}
        )
    obj.update({f"main{key}": emit(f"main{key}", value, 2) for key, value in _totals(assets).items()})
    obj.update(_symbol_margins(legs, emit))
    return obj


def _positions(legs: list[_Leg]) -> AccountObject:
    obj: AccountObject = {}
    for leg in legs:
        obj[leg.symbol] = leg.size
        obj[f"{leg.symbol}Avg-Price"] = round(leg.avg_price, 2)
    return obj


def _balances(profile: _Binance, low: bool, rng: random.Random, t: float) -> _Balances:
    usdt_move = _move(profile.usdt_wave, rng, t)
    usdt = profile.low_usdt * (1 + 0.05 * usdt_move) if low else profile.usdt * (1 + 0.04 * usdt_move)
    usdc = profile.usdc * (1 + 0.04 * _move(profile.usdc_wave, rng, t))
    bnb = profile.bnb * (1 + 0.1 * _move(profile.bnb_wave, rng, t))
    return _Balances(usdt=usdt, usdc=usdc, bnb=bnb)


def _still_balances(profile: _Binance, low: bool) -> _Balances:
    """The account's own levels, the same on every frame."""
    return _Balances(usdt=profile.low_usdt if low else profile.usdt, usdc=profile.usdc, bnb=profile.bnb)


def _legs(profile: _Binance, drifting: bool, rng: random.Random, t: float) -> list[_Leg]:
    legs: list[_Leg] = []
    for pair in profile.pairs:
        avg = pair.price * (1 + 0.03 * _move(pair.wave, rng, t))
        mark = avg * (1 + 0.01 * _move(pair.mark_wave, rng, t))
        other = -(pair.size - math.copysign(pair.gap, pair.size))
        if drifting and pair.base == "BTC":
            other *= 0.9
        legs.append(_Leg(f"{pair.base}USDT", "USDT", pair.size, avg, mark, pair.maint_rate))
        legs.append(
            _Leg(f"{pair.base}USDC", "USDC", round(other, pair.decimals), avg * 0.9998, mark, pair.maint_rate)
        )
    return legs


def _stable_asset(asset: str, balance: float, legs: list[_Leg], order_share: float) -> dict[str, float]:
    mine = [leg for leg in legs if leg.asset == asset]
    unrealized = sum(leg.unrealized for leg in mine)
    position_margin = sum(leg.initial_margin for leg in mine)
    order_margin = order_share * balance
    margin_balance = balance + unrealized
    available = margin_balance - position_margin - order_margin
    return {
        "walletBalance": balance,
        "unrealizedProfit": unrealized,
        "marginBalance": margin_balance,
        "maintMargin": sum(leg.maint_margin for leg in mine),
        "initialMargin": position_margin + order_margin,
        "positionInitialMargin": position_margin,
        "openOrderInitialMargin": order_margin,
        "crossWalletBalance": balance,
        "crossUnPnl": unrealized,
        "availableBalance": available,
        "maxWithdrawAmount": max(0.0, min(balance, available)),
    }


def _bnb_asset(balance: float) -> dict[str, float]:
    zero = ("unrealizedProfit", "maintMargin", "initialMargin", "positionInitialMargin")
    whole = ("walletBalance", "marginBalance", "availableBalance", "maxWithdrawAmount")
    return {**{field: balance for field in whole}, **{field: 0.0 for field in zero}}


def _totals(assets: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    stable = (assets["USDT"], assets["USDC"])
    return {total: sum(a[field] for a in stable) for total, field in ASSET_TOTALS}


def _symbol_margins(legs: list[_Leg], emit: Emit) -> AccountObject:
    out: AccountObject = {}
    for leg in legs:
        for field, value in (
            ("initialMargin", leg.initial_margin),
            ("maintMargin", leg.maint_margin),
            ("crossUnPnl", leg.unrealized),
        ):
            out[f"{leg.symbol}{field}"] = emit(f"{leg.symbol}{field}", value, 2)
    return out


def _emitter(rng: random.Random, string_share: float, fixed: str | None) -> Emit:
    """Rounds a figure and, for a seeded share of them, writes it as a numeric string: drawn per
    frame from ``rng``, or, given ``fixed`` (``seed:account``), once per key and for good (a
    hash of ``fixed`` and the key, no draw from ``rng``)."""

    def emit(key: str, value: float, decimals: int) -> Value:
        rounded = round(value, decimals) + 0.0
        if fixed is None:
            as_string = rng.random() < string_share
        else:
            as_string = zlib.crc32(f"{fixed}:{key}".encode()) / 2**32 < string_share
        return f"{rounded:.{max(decimals, 8)}f}" if as_string else rounded

    return emit


def _okx_object(swaps: tuple[_Swap, ...], seed: int, t: float) -> AccountObject:
    rng = _frame_rng(seed, OKX_ACCOUNT, t)
    obj: AccountObject = {}
    for swap in swaps:
        price = swap.price * (1 + 0.03 * _move(swap.wave, rng, t))
        sizes = OKX_CONTRACT_SIZES[swap.base]
        usdc_lots = -round(swap.lots * sizes["USDT"] / sizes["USDC"])
        for asset, lots, avg in (("USDT", swap.lots, price), ("USDC", usdc_lots, price * 1.0003)):
            symbol = f"{swap.base}-{asset}-SWAP"
            obj[symbol] = lots
            obj[f"{symbol}Avg-Price"] = round(avg, 2)
            obj[f"{symbol}Force-Liquid-Price"] = round(avg * (0.45 if lots > 0 else 1.8), 2)
    return obj
