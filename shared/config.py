"""The checks configuration: the legacy ``features.json`` and the native YAML format.

Both load into one :class:`Config`: a tuple of check :class:`Instance` records. An instance is
one configured use of a check over some accounts (ids or glob patterns); the dispatcher routes
every (instance, account) pair to a job. Problems are collected, not stopped at: a
:class:`ConfigError` lists every one with the file, the path of the field and the reason.

Native YAML (documented in the README)::

    stale_after: 60               # seconds; adds a stale_data instance over every account
    checks:
      low-balance:                # instance name
        check: low_balance        # a registered check
        accounts: ["BINANCE-AAZ0*-UM", "BINANCE-AAZ10-UM"]
        params: {thresholds: {USDT: 10000, USDC: 10000, BNB: 3}}
        cooldown: 300             # seconds between repeats of a firing key
        delay: 0                  # seconds a breach must last first (omitted/null: the check's default)
        resolved: false           # send a notice when a key clears
        schedule: ["0 */6 * * *"] # UTC cron times, for scheduled checks
        missed: late              # a slot missed while down: late (send once, marked) | skip
        enabled: true
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_STALE_AFTER = 60.0
"""Seconds without a snapshot after which an account counts as stale (legacy configs too)."""

LEGACY_FUNCTIONS: Mapping[str, str] = {
    "aaz_binance_delta_check": "delta",
    "aaz_okx_hedge_check": "okx_hedge",
    "aaz_binance_low_balance_check": "low_balance",
    "margin_risk_alert": "margin_risk",
    "generate_balance_report": "balance_report",
    "margin_full_snapshot": "margin_snapshot",
}
"""Legacy function name -> MonitorX check name."""

LEGACY_SCHEDULE = ("0 0,6,12,18 * * *",)
"""The prototype's report times: 00:00, 06:00, 12:00 and 18:00 UTC."""
LEGACY_SCHEDULED = frozenset({"balance_report", "margin_snapshot"})


class Problem(BaseModel):
    """One thing wrong with a configuration file."""

    model_config = ConfigDict(frozen=True)
    path: str
    reason: str

    def render(self, file: str) -> str:
        return f"{file}: {self.path or '<root>'}: {self.reason}"


class ConfigError(Exception):
    """A configuration that cannot run, with every problem found."""

    def __init__(self, file: str, problems: Iterable[Problem]) -> None:
        self.file = file
        self.problems = tuple(problems)
        super().__init__("\n".join(p.render(file) for p in self.problems))


class Instance(BaseModel):
    """One configured check over some accounts."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    check: str = Field(min_length=1)
    accounts: tuple[str, ...] = ("*",)
    """Account ids or glob patterns (``BINANCE-*-UM``)."""
    params: dict[str, Any] = Field(default_factory=dict)
    delay: int | float | None = Field(default=None, ge=0)
    """None (omitted or null): the check's default (None for most checks: the first breaching
    evaluation fires; 60 for delta, 5 for okx_hedge). A number: the first breaching evaluation
    starts a clock, and the first later one at least this many seconds on fires (so 0 fires on
    the second)."""
    cooldown: int | float | None = Field(default=None, ge=0)
    """Seconds between alerts of one key; None: the check's default."""
    resolved: bool | None = None
    """Send a notice when a firing key clears; None: the check's default."""
    schedule: tuple[str, ...] = ()
    missed: Literal["late", "skip"] = "late"
    enabled: bool = True
    source_path: str = ""
    """Where in the file this instance came from, for error messages."""

    def covers(self, account: str) -> bool:
        return any(fnmatch.fnmatchcase(account, pattern) for pattern in self.accounts)

    @property
    def explicit_accounts(self) -> tuple[str, ...]:
        """The account ids named without wildcards."""
        return tuple(a for a in self.accounts if not any(c in a for c in "*?["))


class Config(BaseModel):
    """A loaded configuration: enabled and disabled instances, in file order."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str = "<built-in>"
    format: Literal["legacy", "yaml", "builtin"] = "builtin"
    instances: tuple[Instance, ...] = ()
    stale_after: float = DEFAULT_STALE_AFTER
    problems: tuple[Problem, ...] = ()
    """Entries that did not parse (left out of ``instances``); binding adds its own and raises."""

    def check_problems(self) -> Config:
        """Raise ConfigError when any entry did not parse."""
        if self.problems:
            raise ConfigError(self.source, self.problems)
        return self

    @property
    def enabled(self) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.enabled)

    def instance(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(name)

    def known_accounts(self) -> tuple[str, ...]:
        """Every account id named explicitly by an enabled instance, sorted."""
        return tuple(sorted({a for i in self.enabled for a in i.explicit_accounts}))


# ---------------------------------------------------------------- native YAML


class _YamlCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    check: str = Field(min_length=1)
    accounts: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    delay: int | float | None = Field(default=None, ge=0)
    cooldown: int | float | None = Field(default=None, ge=0)
    resolved: bool | None = None
    schedule: list[str] = Field(default_factory=list)
    missed: Literal["late", "skip"] = "late"
    enabled: bool = True

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: list[str]) -> list[str]:
        from croniter import croniter

        for expr in value:
            if not croniter.is_valid(expr):
                raise ValueError(f"not a cron expression: {expr!r}")
        return value


class _YamlFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    stale_after: float = Field(default=DEFAULT_STALE_AFTER, gt=0)
    checks: dict[str, Any] = Field(default_factory=dict)


def _loc(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def _problems(err: ValidationError, prefix: str = "") -> list[Problem]:
    out = []
    for e in err.errors():
        path = _loc(e["loc"])
        out.append(Problem(path=f"{prefix}.{path}".strip(".") if prefix else path, reason=e["msg"]))
    return out


def _from_yaml(text: str, file: str) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(file, [Problem(path="", reason=f"not valid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError(file, [Problem(path="", reason="the file must hold a mapping")])
    problems: list[Problem] = []
    try:
        parsed = _YamlFile.model_validate(data)
    except ValidationError as exc:  # report it, and still look at every check
        problems.extend(_problems(exc))
        checks = data.get("checks")
        parsed = _YamlFile(checks=checks if isinstance(checks, dict) else {})
    instances: list[Instance] = []
    for name, raw in parsed.checks.items():
        try:
            c = _YamlCheck.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_problems(exc, f"checks.{name}"))
            continue
        instances.append(_yaml_instance(name, c))
    return Config(
        source=file,
        format="yaml",
        instances=tuple(instances),
        stale_after=parsed.stale_after,
        problems=tuple(problems),
    )


def _yaml_instance(name: str, c: _YamlCheck) -> Instance:
    return Instance(
        name=name,
        check=c.check,
        accounts=tuple(c.accounts),
        params=c.params,
        delay=c.delay,
        cooldown=c.cooldown,
        resolved=c.resolved,
        schedule=tuple(c.schedule),
        missed=c.missed,
        enabled=c.enabled,
        source_path=f"checks.{name}",
    )


# ---------------------------------------------------------------- legacy features.json


class _LegacyEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    module: str
    function: str
    expand_by: Literal["account"] | None = None
    accounts: list[str] | None = None
    params_template: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


def _strip_comments(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if not k.startswith("_")}


def _legacy_instance(
    name: str, entry: _LegacyEntry, check: str, params: dict[str, Any], accounts: list[str], path: str
) -> Instance:
    params = _strip_comments(params)
    enabled = params.pop("enabled", True)
    delay = params.pop("delay", None)
    cooldown = params.pop("cooldown", None)
    params.pop("accounts", None)
    params.pop("account", None)
    return Instance(
        name=name,
        check=check,
        accounts=tuple(accounts),
        params=params,
        delay=delay,
        cooldown=cooldown,
        enabled=bool(enabled),
        schedule=LEGACY_SCHEDULE if check in LEGACY_SCHEDULED else (),
        source_path=path,
    )


def _legacy_entry(name: str, raw: Any) -> tuple[list[Instance], list[Problem]]:
    try:
        entry = _LegacyEntry.model_validate(raw)
    except ValidationError as exc:
        return [], _problems(exc, name)
    check = LEGACY_FUNCTIONS.get(entry.function)
    if check is None:
        return [], [Problem(path=f"{name}.function", reason=f"unknown legacy function {entry.function!r}")]
    if entry.expand_by == "account":
        if not entry.accounts:
            return [], [
                Problem(path=f"{name}.accounts", reason="expand_by: account needs a list of accounts")
            ]
        template = entry.params_template or {}
        return [
            _legacy_instance(f"{name}:{acc}", entry, check, dict(template), [acc], f"{name}.accounts.{i}")
            for i, acc in enumerate(entry.accounts)
        ], []
    params = dict(entry.params or {})
    accounts = params.get("accounts") or entry.accounts
    if not isinstance(accounts, list) or not accounts or not all(isinstance(a, str) for a in accounts):
        return [], [
            Problem(path=f"{name}.params.accounts", reason="a non-empty list of account ids is required")
        ]
    return [_legacy_instance(name, entry, check, params, accounts, name)], []


def _from_legacy(text: str, file: str) -> Config:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(file, [Problem(path="", reason=f"not valid JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError(file, [Problem(path="", reason="the file must hold an object of features")])
    instances: list[Instance] = []
    problems: list[Problem] = []
    for name, raw in data.items():
        if name.startswith("_"):
            continue
        found, wrong = _legacy_entry(name, raw)
        instances.extend(found)
        problems.extend(wrong)
    return Config(source=file, format="legacy", instances=tuple(instances), problems=tuple(problems))


def parse(text: str, file: str) -> Config:
    """Parse configuration text; the format follows the file name (``.json``: legacy)."""
    if file.endswith(".json"):
        return _from_legacy(text, file)
    return _from_yaml(text, file)


def load(path: Path) -> Config:
    """Read and parse a configuration file (structure only: see ``engine.registry.validate``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [Problem(path="", reason=f"cannot read: {exc.strerror}")]) from exc
    return parse(text, str(path))
