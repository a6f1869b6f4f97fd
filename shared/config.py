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
        labels: {team: treasury}  # added to this check's alerts
    account_labels:               # account id or glob pattern -> labels added to its alerts; every
      "BINANCE-AAZ*": {desk: aaz} # matching pattern applies, in file order (later ones win)
    receivers:                    # named; each exactly one of the kinds below
      desk: {slack_bot: {token_env: SLACK_BOT_TOKEN, channel: C0123DESK}}   # api_url: Slack's
      ops: {webhook: {url_env: OPS_WEBHOOK_URL}}    # also slack_webhook: {url_env}, jsonl: {path},
      archive: {jsonl: {path: alerts.jsonl}}        # console: (secrets only as *_env names)
    route:                        # Alertmanager's tree; children inherit what they do not set
      receiver: desk
      group_by: [check]           # [...]: every label (each alert its own group)
      group_wait: 30s             # defaults: 30s, 5m, 4h
      group_interval: 5m
      repeat_interval: 4h
      routes:
        - {matchers: ['severity="critical"'], receiver: ops, continue: true}
        - {receiver: desk}
    inhibit_rules:                # absent: DEFAULT_INHIBIT_RULES; []: none
      - {source_matchers: ['check="stale_data"'], target_matchers: ['check="low_balance"'], equal: [account]}

Without ``route`` (and always for a legacy file) the alerter's default applies: every alert to
each sink of the settings as its own message (:func:`default_route`).

Every alert carries MonitorX's own labels (``shared.models.BUILTIN_LABELS``, which a file cannot
set) and those the configuration attaches: a check's ``labels`` and its account's
``account_labels``, the check's winning (``engine.plan.Bound.labels_for``); a legacy file has none.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from shared.matchers import LABEL_NAME, parse_matcher
from shared.models import BUILTIN_LABELS

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
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to this instance's alerts (native YAML ``checks.NAME.labels``, names checked
    there; legacy: none). They win over the account's (:func:`account_labels_for`)."""

    def covers(self, account: str) -> bool:
        return any(fnmatch.fnmatchcase(account, pattern) for pattern in self.accounts)

    @property
    def explicit_accounts(self) -> tuple[str, ...]:
        """The account ids named without wildcards."""
        return tuple(a for a in self.accounts if not any(c in a for c in "*?["))


# ---------------------------------------------------------------- delivery: receivers, route, inhibit rules

GROUP_BY_ALL = "..."
"""``group_by: [...]``: every label of an alert, so each alert is its own group (Alertmanager's)."""
GROUP_WAIT = 30.0
"""Default ``group_wait`` of a written route tree (Alertmanager's): seconds from a group's first
alert to its first notification, so the alerts of one storm arrive together."""
GROUP_INTERVAL = 300.0
"""Default ``group_interval`` (Alertmanager's 5 m): least seconds between two notifications of one
group that report a change (an alert joined, resolved)."""
REPEAT_INTERVAL = 4 * 3600.0
"""Default ``repeat_interval`` (Alertmanager's 4 h): seconds after which an unchanged group that
still fires is notified again."""
SLACK_API_URL = "https://slack.com/api/"
"""Default ``api_url`` of a ``slack_bot`` receiver: Slack's own Web API."""
NEVER_INHIBITED = frozenset({"check_error", "config_error"})
"""Values of the ``check`` label whose alerts no inhibit rule ever mutes: they say MonitorX
itself is blind somewhere, which is never a consequence of another alert."""

_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DURATION_UNITS = (7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_HELP = "a duration such as 90s, 5m, 4h, 1d or 1h30m (or a number of seconds)"


def parse_duration(value: object) -> float:
    """Seconds from ``90s``, ``5m``, ``4h``, ``1d``, ``1w``, ``250ms`` or a combination in that
    order (``1h30m``), or from a non-negative number of seconds; ``0`` is zero. Anything else
    (a negative or non-finite number, a boolean, other text) raises ValueError."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value < float("inf"):
            raise ValueError(f"must be {_DURATION_HELP}, got {_shown(value)}")
        return float(value)
    found = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None or not any(found.groups()):
        if isinstance(value, str) and value.strip() == "0":
            return 0.0
        raise ValueError(f"must be {_DURATION_HELP}, got {_shown(value)}")
    return sum(int(n) * unit for n, unit in zip(found.groups(), _DURATION_UNITS, strict=True) if n)


def _valid_matcher(text: str) -> str:
    """A matcher text that parses (``shared.matchers`` syntax), as written."""
    parse_matcher(text)
    return text


def _valid_label(name: str) -> str:
    """A Prometheus label name, as written."""
    if not LABEL_NAME.fullmatch(name):
        raise ValueError(f"invalid label name {name!r} (letters, digits and _, not first a digit)")
    return name


def _valid_config_label(name: str) -> str:
    """A label name a configuration may attach: valid, and not one MonitorX sets itself."""
    if name in BUILTIN_LABELS:
        builtin = ", ".join(BUILTIN_LABELS)
        raise ValueError(f"label {name!r} is set by MonitorX on every alert ({builtin}): choose another name")
    return _valid_label(name)


def _valid_group_label(name: str) -> str:
    """A label name, or ``...`` (every label)."""
    return name if name == GROUP_BY_ALL else _valid_label(name)


def _valid_env_name(name: str) -> str:
    """The name of an environment variable, as written."""
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"must name an environment variable (letters, digits and _), got {name!r}")
    return name


def _valid_http_url(url: str) -> str:
    """An http:// or https:// URL with a host, as written."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http:// or https:// URL, got {_shown(url)}")
    return url


def _refuse_literal(value: object, info: ValidationInfo) -> None:
    """A secret written in the file itself: refused, whatever its value."""
    name = info.field_name
    raise ValueError(
        f"secrets are never written in the file: put the {name} in an environment variable "
        f"and name that variable in {name}_env"
    )


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as a duration (see :func:`parse_duration`)."""
MatcherText = Annotated[str, AfterValidator(_valid_matcher)]
LabelName = Annotated[str, AfterValidator(_valid_label)]
ConfigLabelName = Annotated[str, AfterValidator(_valid_config_label)]
"""A label name a configuration attaches to alerts (``labels``, ``account_labels``)."""
GroupLabel = Annotated[str, AfterValidator(_valid_group_label)]
EnvName = Annotated[str, AfterValidator(_valid_env_name)]
"""The name of an environment variable holding a secret."""
_RefusedSecret = Annotated[None, BeforeValidator(_refuse_literal), Field(exclude=True, repr=False)]
"""A field declared only to refuse a literal secret with a reason (``url``, ``token``)."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_M = TypeVar("_M", bound=BaseModel)


class _UrlReceiver(BaseModel):
    """A receiver posting to a URL that is (or may carry) a credential: only ``url_env`` names it."""

    model_config = _FROZEN
    url_env: EnvName
    url: _RefusedSecret = None


class SlackWebhookReceiver(_UrlReceiver):
    """A Slack incoming webhook. Its URL is the credential."""


class SlackBotReceiver(BaseModel):
    """A Slack app's bot token (``chat:write``, ``channels:history``) posting to one channel."""

    model_config = _FROZEN
    token_env: EnvName
    channel: str = Field(min_length=1)
    """The channel id (``C0123ABCD``; a ``#name`` works for posting, but updates need the id)."""
    api_url: Annotated[str, AfterValidator(_valid_http_url)] = SLACK_API_URL
    """Slack's Web API base URL (default :data:`SLACK_API_URL`); a stand-in's in tests."""
    token: _RefusedSecret = None


class WebhookReceiver(_UrlReceiver):
    """A generic HTTP webhook (JSON POST). Its URL often carries a credential."""


class JsonlReceiver(BaseModel):
    """One JSON object per notified alert, appended to a file."""

    model_config = _FROZEN
    path: Path


class ConsoleReceiver(BaseModel):
    """Readable text on standard output."""

    model_config = _FROZEN


RECEIVER_KINDS = ("slack_webhook", "slack_bot", "webhook", "jsonl", "console")
"""The kinds of receiver; a receiver is a mapping with exactly one of them."""


class Receiver(BaseModel):
    """A named destination: exactly one of its fields is set (``kind`` says which). A kind
    written with no body (``console:``) is that kind with its defaults."""

    model_config = _FROZEN
    slack_webhook: SlackWebhookReceiver | None = None
    slack_bot: SlackBotReceiver | None = None
    webhook: WebhookReceiver | None = None
    jsonl: JsonlReceiver | None = None
    console: ConsoleReceiver | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        kinds = [k for k in RECEIVER_KINDS if k in data]
        if len(kinds) != 1:
            got = ", ".join(map(str, data)) or "nothing"
            raise ValueError(f"a receiver is exactly one of {', '.join(RECEIVER_KINDS)} (got: {got})")
        return {k: ({} if k in RECEIVER_KINDS and v is None else v) for k, v in data.items()}

    @property
    def kind(self) -> str:
        """Which kind of receiver this is (one of :data:`RECEIVER_KINDS`)."""
        return next(k for k in RECEIVER_KINDS if getattr(self, k) is not None)

    def secrets(self) -> dict[str, str]:
        """Field (``token_env``, ``url_env``) -> the environment variable it names."""
        body = getattr(self, self.kind)
        return {f: getattr(body, f) for f in ("token_env", "url_env") if hasattr(body, f)}


class RouteNode(BaseModel):
    """A node of the route tree as written; None inherits the parent's value (the root's: the
    defaults above). ``alerter.route`` resolves inheritance and matches alerts against it."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    receiver: str | None = None
    matchers: tuple[MatcherText, ...] = ()
    """Every one must match an alert's labels (``shared.matchers`` syntax)."""
    group_by: tuple[GroupLabel, ...] | None = None
    """Labels whose values split alerts into groups; ``[...]`` every label; ``[]`` one group."""
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(default=False, alias="continue")
    """After this node matched, also try its next siblings."""
    routes: tuple[RouteNode, ...] = ()

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if GROUP_BY_ALL in value and len(value) > 1:
            raise ValueError(f"{GROUP_BY_ALL!r} (every label) cannot be combined with other labels")
        twice = sorted({n for n in value if value.count(n) > 1})
        if twice:
            raise ValueError(f"label {twice[0]!r} is listed twice")
        return value


class InhibitRule(BaseModel):
    """While an alert matching ``source_matchers`` fires, alerts matching ``target_matchers``
    with the same values of the ``equal`` labels are not notified (Alertmanager's rule; an alert
    matching both sides never inhibits another that does too)."""

    model_config = _FROZEN
    name: str = ""
    source_matchers: tuple[MatcherText, ...]
    target_matchers: tuple[MatcherText, ...]
    equal: tuple[LabelName, ...] = ()

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("needs at least one matcher (none would match every alert)")
        return value


DEFAULT_INHIBIT_RULES = (
    InhibitRule(
        name="stale-data",
        source_matchers=('check="stale_data"',),
        target_matchers=('check!~"stale_data|check_error|config_error"',),
        equal=("account",),
    ),
)
"""Used when a native YAML file has no ``inhibit_rules``: an account whose data is stale has its
other alerts muted (their figures are old), except stale_data itself and MonitorX's own errors.
A legacy ``features.json`` has none (it is delivered as it always was)."""


def default_route(receivers: Sequence[str]) -> RouteNode:
    """The route when the file has none: every alert to each of ``receivers`` (the sinks of the
    settings, by name, in order) as its own message at once: group_by every label, group_wait,
    group_interval and repeat_interval 0 (each alert the engine emits, repeats included, is
    notified as it comes, as before routing existed). The root has no receiver: with no sink,
    an alert matches no receiver."""
    children = tuple(RouteNode(receiver=name, continue_=True) for name in receivers)
    return RouteNode(
        group_by=(GROUP_BY_ALL,), group_wait=0, group_interval=0, repeat_interval=0, routes=children
    )


class SecretRef(NamedTuple):
    """An environment variable a receiver reads its secret from, and where the file names it."""

    env: str
    path: str


def secret_environment(env_file: Path = Path(".env")) -> dict[str, str]:
    """Where ``*_env`` references are looked up: the process environment over the variables of
    ``env_file`` (as the settings read theirs); empty values count as unset and are left out."""
    found = {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.is_file() else {}
    return found | {k: v for k, v in os.environ.items() if v}


class Config(BaseModel):
    """A loaded configuration: enabled and disabled instances, in file order, and delivery."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str = "<built-in>"
    format: Literal["legacy", "yaml", "builtin"] = "builtin"
    instances: tuple[Instance, ...] = ()
    stale_after: float = DEFAULT_STALE_AFTER
    problems: tuple[Problem, ...] = ()
    """Entries that did not parse (left out of ``instances``); binding adds its own and raises."""
    receivers: dict[str, Receiver] = Field(default_factory=dict)
    """Named receivers (native YAML ``receivers:``); empty when the file has none."""
    route: RouteNode | None = None
    """The route tree; None when the file has none: then :func:`default_route` to the sinks of
    the settings applies."""
    inhibit_rules: tuple[InhibitRule, ...] = ()
    """Native YAML: as written, :data:`DEFAULT_INHIBIT_RULES` when the section is absent
    (``inhibit_rules: []`` turns them off); legacy and built-in: none."""
    account_labels: tuple[tuple[str, dict[str, str]], ...] = ()
    """(account glob pattern, labels) in file order (native YAML ``account_labels``; legacy:
    none): see :func:`account_labels_for`."""

    def check_problems(self) -> Config:
        """Raise ConfigError when any entry did not parse."""
        if self.problems:
            raise ConfigError(self.source, self.problems)
        return self

    @property
    def enabled(self) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.enabled)

    def secrets(self) -> list[SecretRef]:
        """Every environment variable a receiver takes a secret from, in file order."""
        return [
            SecretRef(env, f"receivers.{name}.{receiver.kind}.{field}")
            for name, receiver in self.receivers.items()
            for field, env in receiver.secrets().items()
        ]

    def unset_secrets(self, environment: Mapping[str, str]) -> list[SecretRef]:
        """The secrets that ``environment`` (see :func:`secret_environment`) lacks or has empty."""
        return [ref for ref in self.secrets() if not environment.get(ref.env)]


def account_labels_for(patterns: Iterable[tuple[str, Mapping[str, str]]], account: str) -> dict[str, str]:
    """The labels ``patterns`` (:attr:`Config.account_labels`) attach to ``account``: those of
    every pattern it matches, in order, later ones winning."""
    found: dict[str, str] = {}
    for pattern, labels in patterns:
        if fnmatch.fnmatchcase(account, pattern):
            found.update(labels)
    return found


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
    here = loc[:1] if schema["type"] == "dict" and used == 2 else loc[:used]  # a key's mistake: at the key
    return None if rest is None or (inner is None and rest) else (*here, *rest)


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
    labels: dict[ConfigLabelName, str] = Field(default_factory=dict)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: list[str]) -> list[str]:
        from croniter import croniter

        for expr in value:
            if not croniter.is_valid(expr):
                raise ValueError(f"not a cron expression: {expr!r}")
        return value


class _YamlFile(BaseModel):
    """The top level; each check and each delivery entry is validated on its own after it."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    stale_after: float = Field(default=DEFAULT_STALE_AFTER, gt=0)
    checks: dict[str, Any] = Field(default_factory=dict)
    receivers: dict[str, Any] | None = None
    route: Any = None
    inhibit_rules: list[Any] | None = None
    account_labels: dict[str, dict[ConfigLabelName, str]] = Field(default_factory=dict)


def _salvaged(data: Mapping[str, Any]) -> _YamlFile:
    """The sections of a file whose top level did not validate that still have their shape, so
    their entries are checked too."""
    kept = {"checks": dict, "receivers": dict, "inhibit_rules": list}
    fields = {k: data[k] for k, shape in kept.items() if isinstance(data.get(k), shape)}
    return _YamlFile(route=data.get("route"), **fields)


# ---------------------------------------------------------------- native YAML: delivery sections


def _validated(model: type[_M], raw: Any, path: str, problems: list[Problem]) -> _M | None:
    """``raw`` as ``model``, or None with its problems (at ``path``) added to ``problems``."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, model, path))
        return None


def _route_problems(node: Any, path: str, receivers: Sequence[str]) -> list[Problem]:
    """Receivers a route node (as written, valid or not) or its children name that are not
    defined, each at its path; a receiver written with problems of its own counts as defined."""
    if not isinstance(node, Mapping):
        return []
    problems: list[Problem] = []
    name = node.get("receiver")
    if isinstance(name, str) and name not in receivers:
        reason = f"unknown receiver {name!r} (receivers: {', '.join(receivers) or 'none defined'})"
        problems.append(Problem(path=f"{path}.receiver", reason=reason))
    children = node.get("routes")
    for i, child in enumerate(children if isinstance(children, list) else []):
        problems.extend(_route_problems(child, f"{path}.routes.{i}", receivers))
    return problems


def _root_problems(root: Any) -> list[Problem]:
    """Alertmanager's rules for the root route (as written): it has a receiver, matches every
    alert and has no siblings to continue to."""
    if not isinstance(root, Mapping):
        return []
    problems = []
    if root.get("receiver") is None:
        problems.append(Problem(path="route.receiver", reason="the root route needs a receiver"))
    if root.get("matchers"):
        reason = "the root route matches every alert: it takes no matchers"
        problems.append(Problem(path="route.matchers", reason=reason))
    if root.get("continue") is True:
        reason = "the root route has no siblings to continue to"
        problems.append(Problem(path="route.continue", reason=reason))
    return problems


class _Delivery(NamedTuple):
    receivers: dict[str, Receiver]
    route: RouteNode | None
    inhibit_rules: tuple[InhibitRule, ...]


def _delivery(parsed: _YamlFile, problems: list[Problem]) -> _Delivery:
    """The delivery sections of a native file, their problems added to ``problems``. No
    ``inhibit_rules``: :data:`DEFAULT_INHIBIT_RULES`; ``receivers`` but no ``route``: a problem."""
    receivers = {
        name: r
        for name, raw in (parsed.receivers or {}).items()
        if (r := _validated(Receiver, raw, f"receivers.{name}", problems)) is not None
    }
    rules = tuple(
        rule
        for i, raw in enumerate(parsed.inhibit_rules or [])
        if (rule := _validated(InhibitRule, raw, f"inhibit_rules.{i}", problems)) is not None
    )
    root = None if parsed.route is None else _validated(RouteNode, parsed.route, "route", problems)
    problems.extend(_root_problems(parsed.route))
    problems.extend(_route_problems(parsed.route, "route", list(parsed.receivers or {})))
    if parsed.route is None and parsed.receivers is not None:
        problems.append(Problem(path="route", reason="receivers are defined but no route sends to them"))
    return _Delivery(receivers, root, DEFAULT_INHIBIT_RULES if parsed.inhibit_rules is None else rules)


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
        parsed = _salvaged(data)
    instances: list[Instance] = []
    for name, raw in parsed.checks.items():
        try:
            c = _YamlCheck.model_validate(raw)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, _YamlCheck, f"checks.{name}"))
            continue
        instances.append(_yaml_instance(name, c))
    delivery = _delivery(parsed, problems)
    return Config(
        source=file,
        format="yaml",
        instances=tuple(instances),
        stale_after=parsed.stale_after,
        problems=tuple(problems),
        account_labels=tuple(parsed.account_labels.items()),
        **delivery._asdict(),
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
