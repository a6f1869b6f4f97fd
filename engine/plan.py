"""The runnable form of a configuration: every instance bound to its check, params validated.

Both the dispatcher (routing) and the workers (running) build the same Plan from the same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.checks.base import CheckSpec, ReportSpec
from engine.registry import Registry
from engine.state import Policy
from shared.config import (
    Config,
    ConfigError,
    Instance,
    Problem,
    account_labels_for,
    unknown_check,
    validation_problems,
)

STALE_INSTANCE = "stale_data:all"
"""Name of the stale-data instance added over every configured account when none is configured."""


@dataclass(frozen=True)
class Bound:
    """One enabled instance with its check and validated params, and the configuration's
    ``account_labels`` (which its alerts carry, see :meth:`labels_for`)."""

    instance: Instance
    spec: CheckSpec[Any] | ReportSpec[Any]
    params: BaseModel
    account_labels: tuple[tuple[str, dict[str, str]], ...] = ()

    def labels_for(self, account: str) -> dict[str, str]:
        """The labels the configuration attaches to this instance's alerts about ``account``
        (a report's label, ``*``): the account's (``shared.config.account_labels_for``), then the
        instance's own, which win."""
        return {**account_labels_for(self.account_labels, account), **self.instance.labels}

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def check(self) -> CheckSpec[Any]:
        assert isinstance(self.spec, CheckSpec)
        return self.spec

    @cached_property
    def policy(self) -> Policy:
        spec = self.check
        inst = self.instance
        delay = inst.delay if inst.delay is not None else spec.default_delay
        cooldown = inst.cooldown if inst.cooldown is not None else spec.default_cooldown
        return Policy(delay=delay, cooldown=cooldown, forget_on_clear=spec.forget_on_clear)

    @property
    def schedule(self) -> tuple[str, ...]:
        """A report's cron times (UTC): the instance's, else the report's default."""
        default = self.spec.default_schedule if isinstance(self.spec, ReportSpec) else ()
        return self.instance.schedule or default

    @property
    def send_resolved(self) -> bool:
        return self.instance.resolved if self.instance.resolved is not None else self.check.default_resolved


@dataclass(frozen=True)
class Plan:
    config: Config
    bound: dict[str, Bound]
    _routes: dict[str, tuple[Bound, ...]] = field(default_factory=dict, compare=False)

    def get(self, name: str) -> Bound | None:
        return self.bound.get(name)

    def for_snapshot(self, account: str) -> tuple[Bound, ...]:
        """Per-account checks evaluated on each snapshot of ``account`` (memoized per account)."""
        routes = self._routes.get(account)
        if routes is None:
            routes = tuple(
                b
                for b in self.bound.values()
                if isinstance(b.spec, CheckSpec)
                and "snapshot" in b.spec.triggers
                and b.instance.covers(account)
            )
            self._routes[account] = routes
        return routes

    def on_tick(self) -> tuple[Bound, ...]:
        return tuple(
            b for b in self.bound.values() if isinstance(b.spec, CheckSpec) and "tick" in b.spec.triggers
        )

    def reports(self) -> tuple[Bound, ...]:
        return tuple(b for b in self.bound.values() if isinstance(b.spec, ReportSpec))


def _bind(inst: Instance, registry: Registry, config: Config) -> tuple[Bound | None, list[Problem]]:
    """The instance bound to its check (with ``config``'s account labels), or its problems: an
    unknown check, or each params mistake at the path where the params are written (see
    ``validation_problems``)."""
    spec = registry.get(inst.check)
    if spec is None:
        return None, [unknown_check(inst, registry.names)]
    try:
        params = spec.params.model_validate(_with_timing(inst, spec))
    except ValidationError as exc:
        where = inst.params_path or f"{inst.source_path or inst.name}.params"
        return None, validation_problems(exc, spec.params, where)
    return Bound(inst, spec, params, config.account_labels), []


def _with_timing(inst: Instance, spec: CheckSpec[Any] | ReportSpec[Any]) -> dict[str, Any]:
    """The instance's params plus its effective delay and cooldown, for params models that
    declare those fields (messages quote them)."""
    params = dict(inst.params)
    if isinstance(spec, CheckSpec):
        fields = spec.params.model_fields
        if "delay" in fields and "delay" not in params:
            params["delay"] = inst.delay if inst.delay is not None else spec.default_delay
        if "cooldown" in fields and "cooldown" not in params:
            params["cooldown"] = inst.cooldown if inst.cooldown is not None else spec.default_cooldown
    return params


def _stale_instance(config: Config) -> Instance:
    patterns = sorted({a for i in config.enabled for a in i.accounts})
    return Instance(
        name=STALE_INSTANCE,
        check="stale_data",
        accounts=tuple(patterns) or ("*",),
        params={"max_age": config.stale_after},
        source_path="stale_after",
    )


def build(config: Config, registry: Registry) -> Plan:
    """Bind every enabled instance; raise ConfigError listing every problem (once: the
    instances of one legacy entry share its params and their problems)."""
    instances: Sequence[Instance] = config.enabled
    if not any(i.check == "stale_data" for i in instances):
        instances = (*instances, _stale_instance(config))
    bound: dict[str, Bound] = {}
    problems: list[Problem] = list(config.problems)
    for inst in instances:
        if inst.name in bound:
            problems.append(
                Problem(path=inst.source_path, reason=f"instance name {inst.name!r} is used twice")
            )
            continue
        b, wrong = _bind(inst, registry, config)
        problems.extend(wrong)
        if b is not None:
            bound[inst.name] = b
    if problems:
        raise ConfigError(config.source, problems)
    return Plan(config=config, bound=bound)


def builtin_config() -> Config:
    """The embedded default configuration (the demo's): ``engine/default.yaml``."""
    from importlib.resources import files

    from shared.config import parse

    return parse(
        files("engine").joinpath("default.yaml").read_text(encoding="utf-8"), "<built-in default.yaml>"
    )


def load_config(path: Path | None) -> Config:
    """A configuration file whose every entry parses (None: the built-in default); ConfigError
    lists every problem. For the processes and tools that read it without binding checks."""
    from shared.config import load

    return builtin_config() if path is None else load(path).check_problems()


def load_plan(path: Path | None) -> Plan:
    """Load, validate and bind a configuration file (None: the built-in default)."""
    from shared.config import load

    config = builtin_config() if path is None else load(path)
    return build(config, Registry.discover())
