"""USDC/USDT hedge of OKX swaps (legacy ``aaz_okx_hedge_check``, spec section 2).

For each configured base, two naming schemes are paired, USDC leg first: ``<BASE>-USDC-SWAP`` with
``<BASE>-USDT-SWAP``, and ``OKX-P-<BASE>USDC`` with ``OKX-P-<BASE>USDT``. A pair is evaluated when
both leg keys are in the account object. ``val_i = contracts_i x size_i`` (base units, signed),
``diff = val1 + val2`` (a hedge sums to zero), ``usd = |diff x avg price of the USDT leg|``;
breached when usd > threshold. A pair whose USDT-leg price is 0 or missing is skipped (as delta
does); a leg whose position is null or empty raises InvalidValue.

Every configured base must have a USDT and a USDC contract size: a configuration without one is
refused when it is loaded (the legacy raised KeyError on every frame).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from engine.checks import fmt
from engine.checks.base import CheckSpec, Finding, Message, Params
from shared.models import InvalidValue, Snapshot

PRICE = "Avg-Price"
MARGINS = ("USDC", "USDT")
"""Leg order: USDC first, then USDT."""


def _okx_sizes() -> dict[str, dict[str, float]]:
    return {"ETH": {"USDT": 0.1, "USDC": 0.001}, "BTC": {"USDT": 0.01, "USDC": 0.0001}}


class HedgeParams(Params):
    threshold: int | float = 0
    """USD; breached when the unhedged value is above it. Printed as given."""
    symbols: tuple[str, ...] = ("ETH", "BTC")
    contract_sizes: dict[str, dict[str, float]] = Field(default_factory=_okx_sizes)
    """Base -> margin asset -> base units per contract (OKX ``ctVal``)."""
    delay: int | float | None = None
    """The instance's delay, filled in by the framework; quoted in the message (``60s``)."""

    @model_validator(mode="after")
    def _sizes_cover_symbols(self) -> HedgeParams:
        for base in self.symbols:
            sizes = self.contract_sizes.get(base, {})
            for margin in MARGINS:
                if sizes.get(margin, 0) <= 0:
                    raise ValueError(f"contract_sizes needs a positive {margin} size for {base}")
        return self


def leg_keys(base: str) -> tuple[tuple[str, str], ...]:
    """The (USDC leg, USDT leg) keys of both naming schemes."""
    return ((f"{base}-USDC-SWAP", f"{base}-USDT-SWAP"), (f"OKX-P-{base}USDC", f"OKX-P-{base}USDT"))


def _contracts(snap: Snapshot, key: str) -> float:
    contracts = snap.number(key)
    if contracts is None:
        raise InvalidValue(snap.account, key, "no value for a position of a pair")
    return contracts


def _assess(snap: Snapshot, base: str, keys: tuple[str, str], params: HedgeParams) -> Finding | None:
    price = snap.number(keys[1] + PRICE)
    if not price:
        return None
    sizes = params.contract_sizes[base]
    legs = [(key, _contracts(snap, key), sizes[m]) for key, m in zip(keys, MARGINS, strict=True)]
    diff = sum(contracts * size for _, contracts, size in legs)  # the net base position
    usd = abs(diff * price)
    detail = {"base": base, "legs": legs, "diff": diff, "price": price, "usd": usd}
    return Finding("/".join(keys), usd > params.threshold, detail)


def evaluate(snap: Snapshot | None, params: HedgeParams, now: float) -> list[Finding]:
    if snap is None:
        return []
    present = [(b, k) for b in params.symbols for k in leg_keys(b) if k[0] in snap.raw and k[1] in snap.raw]
    found = (_assess(snap, base, keys, params) for base, keys in present)
    return [f for f in found if f is not None]


def _leg(key: str, contracts: float, size: float, base: str) -> str:
    value = contracts * size
    return f"  {key}: {fmt.num(contracts, 4)} contracts x {fmt.num(size, 4)} = {fmt.num(value, 4)} {base}"


def _block(account: str, finding: Finding, params: HedgeParams) -> str:
    d = finding.detail
    usd = fmt.usd(d["usd"], commas=False)
    limit = fmt.given(params.threshold) + fmt.for_delay(params.delay)
    head = f"{account} {d['base']} ({finding.key}): unhedged {usd} is above the threshold {limit}"
    net = f"  Net: {fmt.num(d['diff'], 4)} {d['base']} x {fmt.usd(d['price'], commas=False)} = {usd}"
    return "\n".join([head, *(_leg(key, n, size, d["base"]) for key, n, size in d["legs"]), net])


def render(account: str, snap: Snapshot | None, params: HedgeParams, fired: Sequence[Finding]) -> Message:
    text = "\n\n".join(_block(account, f, params) for f in fired)
    return Message(title=f"Hedge alert: {account}", text=text)


SPEC = CheckSpec(
    name="okx_hedge",
    params=HedgeParams,
    evaluate=evaluate,
    render=render,
    summary="USD value of the net position of the USDC and USDT swaps of a base above a threshold",
    forget_on_clear=True,
    default_delay=5.0,
    default_cooldown=300.0,
)
