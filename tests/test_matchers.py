"""Label matchers: Alertmanager's syntax and semantics (missing label is "", anchored regexes)."""

from __future__ import annotations

import pytest

from shared.matchers import Matcher, matches_all, matches_empty, parse_matcher, parse_matchers

ACCOUNT = {"check": "delta", "account": "BINANCE-AAZ12-UM", "venue": "binance", "severity": "warning"}


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ("check=delta", "check", "=", "delta"),
        ("  check = delta  ", "check", "=", "delta"),
        ('desk!="a b"', "desk", "!=", "a b"),
        ('account=~"BINANCE-.*"', "account", "=~", "BINANCE-.*"),
        ("account=~BINANCE-.*", "account", "=~", "BINANCE-.*"),
        ("account!~OKX-.*|BYBIT-.*", "account", "!~", "OKX-.*|BYBIT-.*"),
        ('reason="she said \\"hi\\""', "reason", "=", 'she said "hi"'),
        ('key="line\\nbreak"', "key", "=", "line\nbreak"),
        ('path="C:\\\\x"', "path", "=", "C:\\x"),
        ('account=~"BINANCE-\\d+"', "account", "=~", "BINANCE-\\d+"),
        ("desk=", "desk", "=", ""),
        ('desk=""', "desk", "=", ""),
        ('note="a,b{c}=~!"', "note", "=", "a,b{c}=~!"),
    ],
)
def test_parse(text: str, name: str, op: str, value: str) -> None:
    assert parse_matcher(text) == Matcher(name, op, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected name=value"),
        ("check", "expected name=value"),
        ("check delta", "expected name=value"),
        ("check!delta", "expected name=value"),
        ("=delta", "label name is missing"),
        ("1check=delta", "invalid label name '1check'"),
        ("che-ck=delta", "invalid label name 'che-ck'"),
        ('desk="aaz', "no closing double quote"),
        ('desk="aaz\\"', "no closing double quote"),
        ('desk="a"z"', "unescaped double quote"),
        ("desk=a b", "unquoted value contains ' '"),
        ('desk=a"', "unquoted value contains '\"'"),
        ("desk==aaz", "unquoted value contains '='"),
        ("desk=~~aaz", "unquoted value contains '~'"),
        ('account=~"BINANCE-("', "invalid regular expression 'BINANCE-('"),
        ('account!~"[a-"', "invalid regular expression"),
    ],
)
def test_parse_refuses_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="bad matcher") as caught:
        parse_matcher(text)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("name", "op", "value", "reason"),
    [
        ("a b", "=", "x", "invalid label name"),
        ("desk", "==", "x", "invalid operator"),
        ("desk", "=~", "(", "invalid regular expression"),
    ],
)
def test_building_a_bad_matcher_raises(name: str, op: str, value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Matcher(name, op, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("check=delta", True),
        ("check=Delta", False),
        ("check!=delta", False),
        ("check!=stale_data", True),
        ('account=~"BINANCE-.*"', True),
        ('account=~"BINANCE"', False),  # anchored: no partial match
        ('account=~"AAZ12"', False),
        ('account=~"X-BINANCE-.*"', False),
        ('account=~"OKX-.*|BINANCE-.*"', True),  # alternation anchored as a whole
        ('account=~"BINANCE-AAZ12-UM|OKX"', True),
        ('account=~"BINANCE-AAZ12"', False),
        ('account!~"BINANCE-.*"', False),
        ('account!~"OKX-.*"', True),
        ('account=~"(?i)binance-.*"', True),
        ('account=~"BINANCE-AAZ\\d+-UM"', True),
    ],
)
def test_matches(text: str, expected: bool) -> None:
    assert parse_matcher(text).matches(ACCOUNT) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('desk=""', True),
        ("desk=aaz", False),
        ("desk!=aaz", True),
        ('desk!=""', False),
        ('desk=~".*"', True),
        ('desk=~".+"', False),
        ('desk!~".+"', True),
        ('desk!~"aaz"', True),
    ],
)
def test_a_missing_label_is_the_empty_string(text: str, expected: bool) -> None:
    assert parse_matcher(text).matches(ACCOUNT) is expected


def test_a_trailing_newline_does_not_slip_through_the_anchor() -> None:
    assert not parse_matcher("account=~BINANCE-.*").matches({"account": "BINANCE-X\nOKX"})
    assert not parse_matcher('account=~"BINANCE-X"').matches({"account": "BINANCE-X\n"})


@pytest.mark.parametrize(
    "matcher",
    [
        Matcher("desk", "=", "aaz"),
        Matcher("reason", "!=", 'quote " backslash \\ newline \n end'),
        Matcher("account", "=~", "BINANCE-\\d+|OKX-.*"),
        Matcher("desk", "!~", ""),
        Matcher("note", "=", "a, b {c} =~ !"),
    ],
)
def test_text_round_trips(matcher: Matcher) -> None:
    text = str(matcher)
    assert parse_matcher(text) == matcher
    assert text.startswith(f'{matcher.name}{matcher.op}"') and text.endswith('"')


def test_matches_all_is_and_and_empty_matches_everything() -> None:
    both = parse_matchers(["check=delta", 'account=~"BINANCE-.*"'])
    assert matches_all(both, ACCOUNT)
    assert not matches_all((*both, parse_matcher("severity=critical")), ACCOUNT)
    assert matches_all((), ACCOUNT)
    assert matches_all((), {})


def test_parse_matchers_raises_on_the_first_bad_one() -> None:
    with pytest.raises(ValueError, match="'oops'"):
        parse_matchers(["check=delta", "oops", "also bad"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('desk=""', True),
        ('desk=~".*"', True),
        ('desk=~"aaz|"', True),
        ("desk=aaz", False),
        ('desk=~".+"', False),
        ('desk!=""', False),  # as Alertmanager: only = and =~ count as "matching empty"
        ('desk!~"aaz"', False),
    ],
)
def test_matches_empty(text: str, expected: bool) -> None:
    assert matches_empty(parse_matcher(text)) is expected
