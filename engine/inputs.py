"""What a check read of a snapshot, and whether a new snapshot changes it: the engine's rule for
skipping evaluations that cannot change anything.

Each evaluation on a snapshot runs the check on a traced copy (:func:`traced`) that records what
``evaluate`` read: raw keys (``number`` or ``raw`` lookups; ``values`` and ``invalid`` read all), the key
layout (``snap.layout``: which keys exist, in which order), or the whole object (iterating it).
Checks are pure, so the same reads give the same findings: if a pair is **at rest** (no key
pending, firing or cooling down, and the check did not fail; ``engine.state.at_rest``) after an
evaluation, another snapshot whose traced inputs are equal would clear every key again and change
nothing. The pair's **gate** (:class:`Gate`: the reads and the digest of their values, salted with
the check and its params) is stored with its state; the dispatcher and the backtest evaluate a
pair on a snapshot only when it has no gate or the snapshot's digest differs (:func:`still_valid`).

The contract this puts on a check (``engine.checks.base``): on a snapshot, its findings depend on
what it reads of the snapshot, on its params, and on time only through ``now -
snapshot.observed_at`` (always 0 there). A check that depends on the clock is time-driven (its
triggers include ``tick``): tick evaluations are never skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.plan import Bound
from shared.feed import KeyLayout
from shared.models import Snapshot

_MISSING = "\x00missing"


@dataclass
class Reads:
    """What one evaluation read."""

    keys: set[str] = field(default_factory=set)
    layout: bool = False
    whole: bool = False


class _TracedDict(dict[str, Any]):
    """A dict that records the keys looked up in it; any walk over it records the whole object."""

    def __init__(self, data: Mapping[str, Any], reads: Reads) -> None:
        super().__init__(data)
        self._reads = reads

    def __getitem__(self, key: str) -> Any:
        self._reads.keys.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._reads.keys.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._reads.keys.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self._reads.whole = True
        return super().__iter__()

    def __len__(self) -> int:
        self._reads.whole = True
        return super().__len__()

    def keys(self) -> Any:
        self._reads.whole = True
        return super().keys()

    def values(self) -> Any:
        self._reads.whole = True
        return super().values()

    def items(self) -> Any:
        self._reads.whole = True
        return super().items()


class _TracedLayout:
    """A KeyLayout whose use records that the key layout was read."""

    def __init__(self, layout: KeyLayout, reads: Reads) -> None:
        self._layout = layout
        self._reads = reads

    def __getattr__(self, name: str) -> Any:
        self._reads.layout = True
        return getattr(self._layout, name)


def traced(snap: Snapshot) -> tuple[Snapshot, Reads]:
    """A copy of ``snap`` recording what is read of it into the returned Reads."""
    reads = Reads()
    copy = snap.model_copy(
        update={
            "raw": _TracedDict(snap.raw, reads),
            "values": _TracedDict(snap.values, reads),
            "invalid": _TracedDict(snap.invalid, reads),
        }
    )
    copy.__dict__["layout"] = _TracedLayout(snap.layout, reads)
    return copy, reads


@dataclass(frozen=True)
class Gate:
    """The inputs of a pair's last evaluation on a snapshot, while the pair is at rest."""

    keys: tuple[str, ...]
    layout: bool
    whole: bool
    digest: str

    def to_json(self) -> str:
        return json.dumps({"k": list(self.keys), "l": self.layout, "w": self.whole, "d": self.digest})

    @classmethod
    def from_json(cls, text: str) -> Gate:
        data = json.loads(text)
        return cls(tuple(data["k"]), bool(data["l"]), bool(data["w"]), str(data["d"]))


def gate_of(bound: Bound, raw: Mapping[str, Any], reads: Reads) -> Gate:
    """The gate of an evaluation of ``bound`` on a snapshot of ``raw`` that read ``reads``."""
    keys = tuple(sorted(reads.keys))
    return Gate(keys, reads.layout, reads.whole, _digest(bound, raw, keys, reads.layout, reads.whole))


def still_valid(gate: Gate, bound: Bound, raw: Mapping[str, Any]) -> bool:
    """True when an evaluation of ``bound`` on a snapshot of ``raw`` would read the same inputs as
    the one that left the gate, so (the pair being at rest) it cannot change anything."""
    return _digest(bound, raw, gate.keys, gate.layout, gate.whole) == gate.digest


def _digest(bound: Bound, raw: Mapping[str, Any], keys: tuple[str, ...], layout: bool, whole: bool) -> str:
    parts: list[Any] = [bound.check.name, bound.params.model_dump_json()]
    if whole:
        parts.append(list(raw.items()))
    else:
        parts.append([(k, raw.get(k, _MISSING)) for k in keys])
        if layout:
            parts.append(list(raw))
    return hashlib.blake2b(repr(parts).encode(errors="surrogatepass"), digest_size=12).hexdigest()
