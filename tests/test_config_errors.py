"""Configuration errors a person can read: one problem per mistake, at the path the person wrote,
with one reason for a union of types; a legacy entry's ``module`` is checked."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from engine.checks.base import CheckSpec, Finding, Message, Params
from engine.plan import Plan, build
from engine.registry import Registry
from shared.config import ConfigError, Problem, parse
from shared.models import Snapshot

DELTA = "aaz_binance_delta_check:all"
LOW = "aaz_binance_low_balance_check"
MARGIN = "margin_risk_alert:multi"


@pytest.fixture()
def legacy(legacy_config: Path) -> dict[str, Any]:
    """The shipped features.json as data, to spoil one field per test (duplicate ``_comment``
    keys collapse, which the loader ignores anyway)."""
    data: dict[str, Any] = json.loads(legacy_config.read_text())
    return data


def problems_of(data: dict[str, Any], registry: Registry | None = None) -> tuple[Problem, ...]:
    with pytest.raises(ConfigError) as err:
        build(parse(json.dumps(data), "features.json"), registry or Registry.discover(plugins=False))
    return err.value.problems


def bind(data: dict[str, Any], registry: Registry) -> Plan:
    return build(parse(json.dumps(data), "features.json"), registry)


# ---------------------------------------------------------------- params_template, reported once


def test_a_template_field_error_is_reported_once_at_the_template(legacy: dict[str, Any]) -> None:
    legacy[DELTA]["params_template"]["threshold"] = "a lot"
    legacy[DELTA]["params_template"]["colour"] = "red"
    assert problems_of(legacy) == (
        Problem(path=f"{DELTA}.params_template.threshold", reason="must be a number, got 'a lot'"),
        Problem(path=f"{DELTA}.params_template.colour", reason="Extra inputs are not permitted"),
    )


@pytest.mark.parametrize("field", ["delay", "cooldown"])
def test_a_template_timing_error_is_a_problem_reported_once(legacy: dict[str, Any], field: str) -> None:
    legacy[DELTA]["params_template"][field] = -5
    (problem,) = problems_of(legacy)
    assert problem.path == f"{DELTA}.params_template.{field}"
    assert "greater than or equal to 0" in problem.reason


def test_a_params_timing_error_is_a_problem_at_params(legacy: dict[str, Any]) -> None:
    legacy[LOW]["params"]["cooldown"] = "soon"
    assert problems_of(legacy) == (
        Problem(path=f"{LOW}.params.cooldown", reason="must be a number, got 'soon'"),
    )


def test_an_entry_params_error_is_at_params(legacy: dict[str, Any]) -> None:
    legacy[LOW]["params"]["thresholds"]["BNB"] = "x"
    assert problems_of(legacy) == (
        Problem(path=f"{LOW}.params.thresholds.BNB", reason="must be a number, got 'x'"),
    )


# ---------------------------------------------------------------- a union gives one reason


def yaml_problems(text: str, registry: Registry | None = None) -> tuple[Problem, ...]:
    with pytest.raises(ConfigError) as err:
        build(parse(text, "x.yaml"), registry or Registry.discover(plugins=False))
    return err.value.problems


def test_a_union_of_types_gives_one_reason_in_native_yaml() -> None:
    text = """
checks:
  d: {check: delta, params: {threshold: a lot}}
  l: {check: low_balance, params: {thresholds: {int: x, BNB: [1]}}}
  m: {check: margin_risk, params: {thresholds: {maint_margin: high}}}
  s: {check: low_balance, delay: soon}
"""
    assert yaml_problems(text) == (
        Problem(path="checks.s.delay", reason="must be a number, got 'soon'"),
        Problem(path="checks.d.params.threshold", reason="must be a number, got 'a lot'"),
        # a key that reads like a branch label is kept: only the labels are dropped
        Problem(path="checks.l.params.thresholds.int", reason="must be a number, got 'x'"),
        Problem(path="checks.l.params.thresholds.BNB", reason="must be a number, got [1]"),
        Problem(path="checks.m.params.thresholds.maint_margin", reason="must be a number, got 'high'"),
    )


class Band(Params):
    low: float = 0
    high: float = Field(default=1, ge=0)


class UnionParams(Params):
    band: Band | str = "default"
    mode: int | str | None = None


def _evaluate(snap: Snapshot | None, params: UnionParams, now: float) -> list[Finding]:
    return []


def _render(account: str, snap: Snapshot | None, params: UnionParams, fired: Sequence[Finding]) -> Message:
    return Message(title="", text="")


UNION_SPEC = CheckSpec(
    name="banded", params=UnionParams, evaluate=_evaluate, render=_render, summary="test check"
)


def with_specs(*specs: CheckSpec[Any]) -> Registry:
    return Registry([*Registry.discover(plugins=False).specs.values(), *specs])


def test_a_union_branch_that_matched_the_shape_speaks_for_the_union() -> None:
    text = """
checks:
  a: {check: banded, params: {band: {low: z, high: -1}}}
  b: {check: banded, params: {band: 5, mode: [1]}}
"""
    assert yaml_problems(text, with_specs(UNION_SPEC)) == (
        Problem(path="checks.a.params.band.low", reason="must be a number, got 'z'"),
        Problem(path="checks.a.params.band.high", reason="Input should be greater than or equal to 0"),
        Problem(
            path="checks.b.params.band",
            reason="must be a dictionary or instance of Band or a string, got 5",
        ),
        Problem(path="checks.b.params.mode", reason="must be an integer or a string, got [1]"),
    )


# ---------------------------------------------------------------- the module of a legacy entry


def test_the_prototype_modules_map_to_the_builtin_checks(legacy: dict[str, Any]) -> None:
    plan = bind(legacy, Registry.discover(plugins=False))
    assert plan.bound[f"{DELTA}:BINANCE-AAZ01-UM"].instance.check == "delta"
    assert plan.bound[MARGIN].instance.check == "margin_risk"


def test_a_module_the_prototype_does_not_have_is_a_problem(legacy: dict[str, Any]) -> None:
    legacy[MARGIN]["module"] = "mydesk.margin"
    (problem,) = problems_of(legacy)
    assert problem.path == f"{MARGIN}.module"
    assert "'mydesk.margin'" in problem.reason and "'margin_risk_alert'" in problem.reason


def test_a_prototype_module_must_hold_its_function(legacy: dict[str, Any]) -> None:
    legacy[DELTA]["module"] = "features.margin_risk_alert"
    (problem,) = problems_of(legacy)
    assert problem.path == f"{DELTA}.module"


def test_an_unknown_function_in_a_prototype_module_is_named_at_function(legacy: dict[str, Any]) -> None:
    legacy[MARGIN] |= {"module": "features.funding_check", "function": "funding_check"}
    (problem,) = problems_of(legacy)
    assert problem.path == f"{MARGIN}.function"
    assert "'funding_check'" in problem.reason


FUNDING_SPEC = CheckSpec(
    name="funding_check", params=UnionParams, evaluate=_evaluate, render=_render, summary="a desk's own"
)


def test_a_plugin_check_named_as_the_function_provides_the_module(legacy: dict[str, Any]) -> None:
    entry = {
        "module": "mydesk.funding",
        "function": "funding_check",
        "expand_by": "account",
        "accounts": ["BINANCE-AAZ01-UM", "BINANCE-AAZ02-UM"],
        "params_template": {"band": {"low": 1}, "cooldown": 30},
    }
    legacy["funding:all"] = copy.deepcopy(entry)
    plan = bind(legacy, with_specs(FUNDING_SPEC))
    bound = plan.bound["funding:all:BINANCE-AAZ02-UM"]
    assert bound.check is FUNDING_SPEC
    assert bound.params == UnionParams(band=Band(low=1))
    assert bound.policy.cooldown == 30
    legacy["funding:all"]["params_template"]["band"] = {"low": "z"}
    assert problems_of(legacy, with_specs(FUNDING_SPEC)) == (
        Problem(path="funding:all.params_template.band.low", reason="must be a number, got 'z'"),
    )


def test_config_check_names_the_module_and_each_problem_once(legacy: dict[str, Any], tmp_path: Path) -> None:
    legacy[MARGIN]["module"] = "mydesk.margin"
    legacy[DELTA]["params_template"]["threshold"] = "a lot"
    bad = tmp_path / "features.json"
    bad.write_text(json.dumps(legacy))
    done = subprocess.run(
        [sys.executable, "-m", "monitorx", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == f"invalid configuration {bad}:"
    assert lines[1:] == [
        f"  {bad}: {DELTA}.params_template.threshold: must be a number, got 'a lot'",
        f"  {bad}: {MARGIN}.module: {lines[2].split('.module: ', 1)[1]}",
    ]
    assert "prototype" in lines[2]
