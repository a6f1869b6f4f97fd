"""USDT/USDC delta of Binance USD-M positions (legacy ``aaz_binance_delta_check``, spec section 1).

Position keys ending in ``USDT`` or ``USDC`` (never ``...Avg-Price``) are grouped by the base left
after that suffix; only bases with exactly two keys form a pair. The legs are taken in the order
their keys appear in the account object, and both are valued at the FIRST leg's average price
(a pair whose first-leg price is 0 or missing is skipped). Legacy: ``delta = ||q1 x p| - |q2 x p||``,
so two legs on the same side read as hedged; ``sign_aware: true`` values the legs with their
signs and takes ``delta = |q1 x p + q2 x p|``. Breached when delta > threshold (USD).

Key: ``<BASE>USDT/<BASE>USDC`` whatever the key order of the frame, so a pair's state survives a
feed that reorders its keys. A pair leg whose position is null or empty raises InvalidValue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine.checks import fmt
from engine.checks.base import CheckSpec, Finding, Message, Params
from shared.models import InvalidValue, Snapshot

SUFFIXES = ("USDT", "USDC")
SUFFIX_LENGTH = 4
PRICE = "Avg-Price"


class DeltaParams(Params):
    threshold: int | float = 100
    """USD; breached when the delta is above it. Printed as given (``100``, ``100.5``)."""
    sign_aware: bool = False
    """Fix for the legacy quirk: value the legs with their signs, so same-side legs are not a hedge."""
    delay: int | float | None = None
    """The instance's delay, filled in by the framework; quoted in the message (``60s``)."""


def pairs(keys: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(base, first, second)`` of every base with exactly two USDT/USDC keys, in key order."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if key.endswith(SUFFIXES):  # never a ``...Avg-Price`` key: it ends in neither suffix
            groups.setdefault(key[:-SUFFIX_LENGTH], []).append(key)
    return [(base, legs[0], legs[1]) for base, legs in groups.items() if len(legs) == 2]


def _size(snap: Snapshot, key: str) -> float:
    size = snap.number(key)
    if size is None:
        raise InvalidValue(snap.account, key, "no value for a position of a pair")
    return size


def _assess(snap: Snapshot, base: str, first: str, second: str, params: DeltaParams) -> Finding | None:
    price = snap.number(first + PRICE)
    if not price:
        return None
    q1, q2 = _size(snap, first), _size(snap, second)
    v1, v2 = q1 * price, q2 * price
    if not params.sign_aware:
        v1, v2 = abs(v1), abs(v2)
    delta = abs(v1 + v2) if params.sign_aware else abs(v1 - v2)
    legs = [(first, q1, price, v1), (second, q2, price, v2)]
    return Finding(f"{base}USDT/{base}USDC", delta > params.threshold, {"delta": delta, "legs": legs})


def evaluate(snap: Snapshot | None, params: DeltaParams, now: float) -> list[Finding]:
    if snap is None:
        return []
    found = (_assess(snap, base, first, second, params) for base, first, second in snap.layout.derived(pairs))
    return [f for f in found if f is not None]


def _leg(symbol: str, qty: float, price: float, value: float) -> str:
    return f"  {symbol}: {fmt.num(qty, 2)} x {fmt.num(price, 4)} = {fmt.usd(value, commas=False)}"


def _block(account: str, finding: Finding, params: DeltaParams) -> str:
    legs = finding.detail["legs"]
    names = " / ".join(leg[0] for leg in legs)
    head = (
        f"{account} {names}: delta {fmt.usd(finding.detail['delta'], commas=False)} "
        f"is above the threshold {fmt.given(params.threshold)}{fmt.for_delay(params.delay)}"
    )
    return "\n".join([head, *(_leg(*leg) for leg in legs)])


def render(account: str, snap: Snapshot | None, params: DeltaParams, fired: Sequence[Finding]) -> Message:
    text = "\n\n".join(_block(account, f, params) for f in fired)
    return Message(title=f"Delta alert: {account}", text=text)


SPEC = CheckSpec(
    name="delta",
    params=DeltaParams,
    evaluate=evaluate,
    render=render,
    summary="USD delta between the USDT and USDC legs of a base above a threshold",
    forget_on_clear=True,
    default_delay=60.0,
    default_cooldown=300.0,
)
