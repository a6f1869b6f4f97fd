"""Which checks exist: the built-ins and every plugin declaring an entry point in the group
``monitorx.checks`` (its value names a CheckSpec or ReportSpec object)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from engine.checks.base import AnySpec, CheckSpec, ReportSpec

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "monitorx.checks"
BUILTIN_MODULES: tuple[str, ...] = (
    "engine.checks.low_balance",
    "engine.checks.stale_data",
    "engine.checks.delta",
    "engine.checks.okx_hedge",
    "engine.checks.margin_risk",
    "engine.checks.balance_report",
    "engine.checks.margin_snapshot",
)
"""Modules of the built-in checks, each defining ``SPEC``."""


class Registry:
    """Check name -> spec."""

    def __init__(self, specs: Iterable[AnySpec]) -> None:
        self._specs: dict[str, AnySpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"two checks are named {spec.name!r}")
            self._specs[spec.name] = spec

    @classmethod
    def discover(cls, plugins: bool = True) -> Registry:
        specs = [_spec_of(importlib.import_module(m).SPEC, m) for m in BUILTIN_MODULES]
        if plugins:
            specs.extend(_plugins())
        return cls(specs)

    def get(self, name: str) -> AnySpec | None:
        return self._specs.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._specs))

    @property
    def specs(self) -> Mapping[str, AnySpec]:
        return dict(self._specs)


def _spec_of(obj: object, where: str) -> AnySpec:
    if not isinstance(obj, CheckSpec | ReportSpec):
        raise TypeError(f"{where} does not name a CheckSpec or ReportSpec")
    return obj


def _plugins() -> list[AnySpec]:
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append(_spec_of(ep.load(), ep.value))
        except (ImportError, AttributeError, TypeError) as exc:
            log.error("check plugin %s (%s) cannot be loaded: %s", ep.name, ep.value, exc)
    return found
