"""Label matchers with Alertmanager's semantics: the one matching rule of silences, routes and
inhibition.

A matcher is ``name OP value`` with ``OP`` one of ``=``, ``!=``, ``=~``, ``!~``. Promises, as in
Alertmanager (``pkg/labels/matcher.go``):

* a label the alert does not carry has the value ``""``: ``desk=""`` matches alerts without a
  ``desk`` label, ``desk!="aaz"`` matches them too;
* a regex must match the whole value (``=~"BINANCE-.*"`` matches ``BINANCE-AAZ12-UM``, not
  ``X-BINANCE-1``); it is compiled once, when the matcher is built. Patterns use Python's ``re``
  syntax, the same as Alertmanager's RE2 for what an operator writes (classes, alternation,
  repetition, a leading ``(?i)``);
* a list of matchers matches when every one of them does (an empty list matches everything).

Text syntax (:func:`parse_matcher`): ``name=value``, ``name!="a b"``, ``name=~"BINANCE-.*"``.
Whitespace around the three parts is ignored. The name is a Prometheus label name. A value in
double quotes may hold anything; inside it ``\\"`` is a quote, ``\\\\`` a backslash, ``\\n`` a line
feed, and any other backslash stays literal (so ``"\\d+"`` is the regex ``\\d+``). An unquoted value
may not contain whitespace or any of ``{}!=~,\\"'`` and the backtick (Alertmanager's reserved
characters): quote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

Op = Literal["=", "!=", "=~", "!~"]
OPS: tuple[Op, ...] = ("=", "!=", "=~", "!~")
"""The four operators: equal, not equal, regex match, regex non-match."""

LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A valid label name (Prometheus')."""
RESERVED = frozenset("{}!=~,\\\"'`")
"""Characters an unquoted value may not contain (besides whitespace)."""

_SYNTAX = re.compile(r"\s*([^\s=!~]*)\s*(=~|!~|!=|=)\s*(.*?)\s*", re.DOTALL)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


@dataclass(frozen=True)
class Matcher:
    """One label matcher. Building it validates it: a bad name, operator or regex raises
    ValueError saying which. Two matchers are equal when name, operator and value are."""

    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not LABEL_NAME.fullmatch(self.name):
            raise ValueError(f"invalid label name {self.name!r} (letters, digits and _, not first a digit)")
        if self.op not in OPS:
            raise ValueError(f"invalid operator {self.op!r} (one of {', '.join(OPS)})")
        if self.op in ("=~", "!~"):
            object.__setattr__(self, "_regex", _compile(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels satisfy this matcher; a missing label counts as ``""``."""
        actual = labels.get(self.name, "")
        if self._regex is not None:
            return (self._regex.fullmatch(actual) is not None) == (self.op == "=~")
        return (actual == self.value) == (self.op == "=")

    def __str__(self) -> str:
        """The canonical text, value always quoted: ``parse_matcher(str(m)) == m``."""
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


def _compile(pattern: str) -> re.Pattern[str]:
    """Compile a regex value; used with ``fullmatch``, so it is anchored at both ends."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher from its text (syntax in the module docstring). Raises ValueError with
    the reason for anything else: no operator, a bad label name, a stray quote, an unquoted
    value with a reserved character, an invalid regex."""
    found = _SYNTAX.fullmatch(text)
    if found is None:
        raise ValueError(f"bad matcher {text!r}: expected name=value, name!=value, name=~regex, name!~regex")
    name, op, raw = found.groups()
    if not name:
        raise ValueError(f"bad matcher {text!r}: the label name is missing")
    try:
        value = _unquote(raw) if raw.startswith('"') else _unquoted(raw)
        return Matcher(name, cast(Op, op), value)
    except ValueError as exc:
        raise ValueError(f"bad matcher {text!r}: {exc}") from None


def _unquoted(raw: str) -> str:
    """An unquoted value, refused if it holds whitespace or a reserved character."""
    bad = sorted({c for c in raw if c in RESERVED or c.isspace()})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise ValueError(
            f"unquoted value contains {shown}: put the value in double quotes "
            "(from a shell, quote the whole matcher: 'name=\"a b\"')"
        )
    return raw


def _unquote(raw: str) -> str:
    """The value inside ``"..."``, escapes resolved; a missing or early closing quote raises."""
    if len(raw) < 2 or not raw.endswith('"') or _ends_escaped(raw[1:-1]):
        raise ValueError("the quoted value has no closing double quote")
    out: list[str] = []
    chars = iter(raw[1:-1])
    for c in chars:
        if c == '"':
            raise ValueError('unescaped double quote inside the value (write \\")')
        if c == "\\":
            nxt = next(chars)  # never exhausted: _ends_escaped refused a trailing lone backslash
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
        else:
            out.append(c)
    return "".join(out)


def _ends_escaped(body: str) -> bool:
    """Whether ``body`` ends in an odd run of backslashes (its closing quote is escaped)."""
    return (len(body) - len(body.rstrip("\\"))) % 2 == 1


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    """Parse several matcher texts (one matcher each); the first bad one raises ValueError."""
    return tuple(parse_matcher(t) for t in texts)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches the labels (True for no matchers, as in Alertmanager)."""
    return all(m.matches(labels) for m in matchers)


def matches_empty(matcher: Matcher) -> bool:
    """Alertmanager's rule for silences: an ``=`` or ``=~`` matcher that also matches a missing
    label. A silence made only of such matchers would silence every alert, so it is refused."""
    return matcher.op in ("=", "=~") and matcher.matches({})
