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
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

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
LEGACY_PACKAGE = "features"
"""The prototype's own modules are ``features.<function>``: only those map to built-in checks."""

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
    """A configuration that cannot run, with every problem found, each distinct one once (the
    instances a legacy entry expands to share its ``params_template``, so its problems too)."""

    def __init__(self, file: str, problems: Iterable[Problem]) -> None:
        self.file = file
        self.problems = tuple(dict.fromkeys(problems))
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
    check_path: str = ""
    """Where the file chooses its check (``checks.NAME.check``; legacy: ``NAME.module`` or
    ``NAME.function``); empty: ``source_path.check``."""
    params_path: str = ""
    """Where its params are written (legacy: ``NAME.params_template`` for every instance an entry
    expands to, or ``NAME.params``); empty: ``source_path.params``."""
    legacy_module: str = ""
    """The ``module`` of a legacy entry that is not the prototype's own: ``check`` is then the
    entry's function name, a check only a plugin can provide."""

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


# ---------------------------------------------------------------- problems from pydantic errors

_Loc = tuple[int | str, ...]
"""Where a pydantic error is: field names, keys, indexes, union branch labels."""


class _Branch(str):
    """A part of an error's location that names a branch of a union (``int``, a model's name)."""


def validation_problems(err: ValidationError, model: type[BaseModel], prefix: str = "") -> list[Problem]:
    """One Problem per mistake in ``err`` (raised validating ``model``), at ``prefix.<field path>``.

    Pydantic reports a value that fits no branch of a union once per branch (``x.int``,
    ``x.float``). The branches are found in ``model``'s schema (so a key that reads like a
    branch label stays) and each union gives one problem: when a branch took the value's shape
    (a mapping for a model branch) and failed inside it, that branch's errors; otherwise one
    reason naming every branch ("must be a number, got 'a lot'"). Type errors read "must be
    <kind>, got <value>"; every other reason is pydantic's own.
    """
    schema: Mapping[str, Any] = model.__pydantic_core_schema__
    found = [(_marked(schema, tuple(e["loc"]), {}) or tuple(e["loc"]), e) for e in err.errors()]
    return [
        Problem(path=".".join(map(str, (prefix, *loc) if prefix else loc)), reason=why)
        for loc, why in _collapse(found)
    ]


def _marked(schema: Mapping[str, Any], loc: _Loc, defs: Mapping[str, Any]) -> _Loc | None:
    """``loc`` with its union branch labels made :class:`_Branch`, walking the core ``schema``;
    None when ``loc`` does not fit it (a schema kind not walked here)."""
    if "ref" in schema:
        defs = {**defs, schema["ref"]: schema}
    if schema["type"] == "definitions":
        defs = {**defs, **{d["ref"]: d for d in schema["definitions"]}}
    if schema["type"] == "definition-ref":
        target = defs.get(schema["schema_ref"])
        return None if target is None else _marked(target, loc, defs)
    if not loc:
        return ()
    if schema["type"] == "union":
        for choice in schema["choices"]:
            rest = _marked(choice[0] if isinstance(choice, tuple) else choice, loc[1:], defs)
            if rest is not None:
                return (_Branch(loc[0]), *rest)
        return None
    inner, used = _below(schema, loc)
    if used == 0:
        return None if inner is None else _marked(inner, loc, defs)
    rest = loc[used:] if inner is None else _marked(inner, loc[used:], defs)
    return None if rest is None or (inner is None and rest) else (*loc[:used], *rest)


def _below(schema: Mapping[str, Any], loc: _Loc) -> tuple[Mapping[str, Any] | None, int]:
    """The schema the rest of ``loc`` is in, and how many parts of ``loc`` lead to it (0: a
    wrapper such as a default or a validator; None with 1: a value of no known schema, such as
    a field that is not declared)."""
    kind = schema["type"]
    if kind in ("model-fields", "typed-dict"):
        field = schema["fields"].get(loc[0])
        return (None if field is None else field["schema"]), 1
    if kind == "dataclass-args":
        fields = {f["name"]: f["schema"] for f in schema["fields"]}
        return fields.get(str(loc[0])), 1
    if kind == "tagged-union":
        return schema["choices"].get(loc[0]), 1
    if kind == "dict":
        if loc[1:2] == ("[key]",):
            return schema.get("keys_schema"), 2
        return schema.get("values_schema"), 1
    if kind in ("list", "set", "frozenset", "generator", "tuple"):
        items = schema.get("items_schema")
        if isinstance(items, list):  # a tuple's positions
            return (items[min(int(loc[0]), len(items) - 1)] if items else None), 1
        return items, 1
    return schema.get("schema"), 0


def _collapse(errors: Sequence[tuple[_Loc, ErrorDetails]]) -> list[tuple[_Loc, str]]:
    """(field path, reason) per mistake, in pydantic's order: each union's errors as one."""
    slots: dict[int | _Loc, list[tuple[_Loc, ErrorDetails]]] = {}  # error index, or a union's place
    for i, (loc, err) in enumerate(errors):
        at = next((n for n, part in enumerate(loc) if isinstance(part, _Branch)), None)
        slots.setdefault(i if at is None else loc[:at], []).append((loc, err))
    out: list[tuple[_Loc, str]] = []
    for slot, group in slots.items():
        if isinstance(slot, int):
            out.extend((loc, _reason(err)) for loc, err in group)
        else:
            out.extend(_union(slot, group))
    return out


def _union(point: _Loc, branches: Sequence[tuple[_Loc, ErrorDetails]]) -> list[tuple[_Loc, str]]:
    """The problems of a value at ``point`` that no branch of its union accepted."""
    past = len(point) + 1
    inside = [((*point, *loc[past:]), err) for loc, err in branches if len(loc) > past]
    if inside:  # a branch took the value's shape: its errors are the ones the person can fix
        return _collapse(inside)
    kinds = list(dict.fromkeys(_kind(err) for _, err in branches))
    if "a number" in kinds and "an integer" in kinds:
        kinds.remove("an integer")
    return [(point, f"must be {' or '.join(kinds)}, got {_shown(branches[0][1]['input'])}")]


_SHOULD_BE = "Input should be "


def _reason(err: ErrorDetails) -> str:
    """A type error as "must be <kind>, got <value>"; any other error in pydantic's words."""
    if err["type"].endswith(("_type", "_parsing")) or err["type"] == "literal_error":
        return f"must be {_kind(err)}, got {_shown(err['input'])}"
    return err["msg"].removeprefix("Value error, ")


def _kind(err: ErrorDetails) -> str:
    """What pydantic wanted, from its message: "a number", "an integer", "'late' or 'skip'"."""
    msg = err["msg"]
    if not msg.startswith(_SHOULD_BE):
        return msg.removeprefix("Value error, ")
    wanted = re.split(r", (?:unable|got) ", msg.removeprefix(_SHOULD_BE), maxsplit=1)[0]
    return re.sub(r"^a (?=[aeiou])", "an ", wanted.replace("a valid ", "a ", 1))


_SHOWN_MAX = 40
"""Characters of a wrong value quoted in a reason; longer values are cut with ``...``."""


def _shown(value: object) -> str:
    """A value as the file would spell it: JSON's null, true, false; anything else as repr."""
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def unknown_check(inst: Instance, known: Iterable[str]) -> Problem:
    """The problem of an instance whose check is not registered."""
    path = inst.check_path or f"{inst.source_path or inst.name}.check"
    plugin = f"and no plugin provides a check named {inst.check!r}"
    if not inst.legacy_module:
        reason = f"unknown check {inst.check!r} (known: {', '.join(known)})"
    elif inst.legacy_module == f"{LEGACY_PACKAGE}.{inst.check}":
        functions = ", ".join(LEGACY_FUNCTIONS)
        reason = f"unknown legacy function {inst.check!r} (the prototype's: {functions}), {plugin}"
    else:
        reason = (
            f"module {inst.legacy_module!r} is not the prototype's own ({LEGACY_PACKAGE}.{inst.check}), "
            f"so the prototype could not import it, {plugin}"
        )
    return Problem(path=path, reason=reason)


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
        problems.extend(validation_problems(exc, _YamlFile))
        checks = data.get("checks")
        parsed = _YamlFile(checks=checks if isinstance(checks, dict) else {})
    instances: list[Instance] = []
    for name, raw in parsed.checks.items():
        try:
            c = _YamlCheck.model_validate(raw)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, _YamlCheck, f"checks.{name}"))
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
    """Every field of the check as written (lists become tuples), and where it is in the file."""
    at = f"checks.{name}"
    return Instance(
        name=name, source_path=at, check_path=f"{at}.check", params_path=f"{at}.params", **c.model_dump()
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


class _Check(NamedTuple):
    """The check a legacy entry runs, where the file chooses it, and the entry's module when
    only a plugin can provide that check."""

    name: str
    path: str
    legacy_module: str


class _Use(NamedTuple):
    """One instance a legacy entry makes: its name, its accounts and its place in the file."""

    name: str
    accounts: list[str]
    path: str


def _legacy_check(name: str, entry: _LegacyEntry) -> _Check:
    """The prototype's own module (``features.<function>``, a function of LEGACY_FUNCTIONS) runs
    the built-in check; any other module (the prototype would fail to import it) runs the check
    named as the function, which only a plugin can provide: binding reports it when none does,
    at ``NAME.function`` for a ``features.<function>`` module, else at ``NAME.module``."""
    own = entry.module == f"{LEGACY_PACKAGE}.{entry.function}"
    if own and entry.function in LEGACY_FUNCTIONS:
        return _Check(LEGACY_FUNCTIONS[entry.function], f"{name}.module", "")
    return _Check(entry.function, f"{name}.{'function' if own else 'module'}", entry.module)


def _legacy_uses(name: str, entry: _LegacyEntry) -> tuple[list[_Use], Mapping[str, Any], str] | Problem:
    """The instances an entry makes, the params they share and where those are written."""
    if entry.expand_by == "account":
        if not entry.accounts:
            return Problem(path=f"{name}.accounts", reason="expand_by: account needs a list of accounts")
        uses = [_Use(f"{name}:{acc}", [acc], f"{name}.accounts.{i}") for i, acc in enumerate(entry.accounts)]
        return uses, entry.params_template or {}, f"{name}.params_template"
    params = entry.params or {}
    accounts = params.get("accounts") or entry.accounts
    if not isinstance(accounts, list) or not accounts or not all(isinstance(a, str) for a in accounts):
        return Problem(path=f"{name}.params.accounts", reason="a non-empty list of account ids is required")
    return [_Use(name, accounts, name)], params, f"{name}.params"


def _legacy_instance(check: _Check, use: _Use, shared: Mapping[str, Any], params_path: str) -> Instance:
    """``_``-prefixed keys are comments; ``accounts``/``account`` only choose the accounts."""
    params = {k: v for k, v in shared.items() if not k.startswith("_") and k not in ("accounts", "account")}
    enabled = params.pop("enabled", True)
    delay = params.pop("delay", None)
    cooldown = params.pop("cooldown", None)
    return Instance(
        name=use.name,
        check=check.name,
        accounts=tuple(use.accounts),
        params=params,
        delay=delay,
        cooldown=cooldown,
        enabled=bool(enabled),
        schedule=LEGACY_SCHEDULE if check.name in LEGACY_SCHEDULED else (),
        source_path=use.path,
        check_path=check.path,
        params_path=params_path,
        legacy_module=check.legacy_module,
    )


def _legacy_entry(name: str, raw: Any) -> tuple[list[Instance], list[Problem]]:
    try:
        entry = _LegacyEntry.model_validate(raw)
    except ValidationError as exc:
        return [], validation_problems(exc, _LegacyEntry, name)
    uses = _legacy_uses(name, entry)
    if isinstance(uses, Problem):
        return [], [uses]
    found, params, params_path = uses
    check = _legacy_check(name, entry)
    try:
        return [_legacy_instance(check, use, params, params_path) for use in found], []
    except ValidationError as exc:  # delay or cooldown: shared by every use, reported once
        return [], validation_problems(exc, Instance, params_path)


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
