"""``monitorx config check|show|convert``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from engine.plan import Plan, build, builtin_config
from engine.registry import Registry
from shared.cli import config_or_exit, config_path
from shared.config import Config, Instance, RouteNode, load, secret_environment


def _plan(path: Path | None) -> Plan:
    config = builtin_config() if path is None else load(path)
    return build(config, Registry.discover())


def check(path: Path) -> int:
    """Validate a file; print what it configures and every ``*_env`` secret that is not set
    here (environment or ``.env``): that only warns (exit 0), the alerter's host may have it."""
    plan = config_or_exit(lambda: _plan(path))
    print(f"{path}: OK ({plan.config.format}), {len(plan.bound)} instances")
    print(_delivery_summary(plan.config))
    for ref in plan.config.unset_secrets(secret_environment()):
        print(f"  secret {ref.env} is not set ({ref.path})")
    return 0


def _delivery_summary(config: Config) -> str:
    """One line: the receivers, routes and inhibit rules the file configures."""
    rules = f"{len(config.inhibit_rules)} inhibit rule{'s' * (len(config.inhibit_rules) != 1)}"
    if config.route is None:
        return f"delivery: default route (each alert to every sink of the settings, its own message), {rules}"
    return f"delivery: {len(config.receivers)} receivers, {_count_routes(config.route)} routes, {rules}"


def _count_routes(node: RouteNode) -> int:
    return 1 + sum(_count_routes(child) for child in node.routes)


def show(path: Path | None) -> int:
    plan = config_or_exit(lambda: _plan(path))
    for name, b in plan.bound.items():
        inst = b.instance
        extra = ""
        if b.spec.__class__.__name__ == "CheckSpec":
            policy = b.policy
            extra = f" delay={policy.delay} cooldown={policy.cooldown:g} resolved={b.send_resolved}"
        print(f"{name}\n  check={inst.check} accounts={','.join(inst.accounts)}{extra}")
        if inst.schedule:
            print(f"  schedule={' | '.join(inst.schedule)} (UTC) missed={inst.missed}")
        print(f"  params={json.dumps(b.params.model_dump(mode='json'), sort_keys=True)}")
    _show_routing(plan)
    return 0


def _show_routing(plan: Plan) -> None:
    """The expanded (account, check) pairs of every account named explicitly; accounts matched
    only by a pattern are routed the same way once they report."""
    accounts = sorted({a for b in plan.bound.values() for a in b.instance.explicit_accounts})
    print(f"\nrouting ({len(accounts)} accounts named in the configuration):")
    for account in accounts:
        per_snapshot = [b.name for b in plan.for_snapshot(account)]
        reports = [b.name for b in plan.reports() if b.instance.covers(account)]
        print(f"  {account}: {', '.join(per_snapshot + reports) or '(nothing)'}")
    patterns = sorted({a for b in plan.bound.values() for a in b.instance.accounts} - set(accounts))
    if patterns:
        print(f"  patterns routed as accounts report: {', '.join(patterns)}")


def _yaml_check(inst: Instance) -> dict[str, Any]:
    out: dict[str, Any] = {"check": inst.check, "accounts": list(inst.accounts)}
    if inst.params:
        out["params"] = inst.params
    for name in ("delay", "cooldown", "resolved"):
        if getattr(inst, name) is not None:
            out[name] = getattr(inst, name)
    if inst.schedule:
        out["schedule"] = list(inst.schedule)
    if not inst.enabled:
        out["enabled"] = False
    if inst.labels:
        out["labels"] = dict(inst.labels)
    return out


def _yaml_delivery(config: Config) -> dict[str, Any]:
    """The delivery sections, so that the converted file delivers as the original did: the
    receivers and route when written, the inhibit rules always (a legacy file's: ``[]``)."""
    out: dict[str, Any] = {}
    if config.route is not None:
        out["receivers"] = {name: _as_written(r) for name, r in config.receivers.items()}
        out["route"] = _as_written(config.route)
    out["inhibit_rules"] = [_as_written(rule) for rule in config.inhibit_rules]
    return out


def _as_written(model: BaseModel) -> Any:
    """A delivery model as YAML data: the fields set to other than their defaults, by alias."""
    return model.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def to_yaml(config: Config) -> str:
    doc = {
        "version": 1,
        "stale_after": config.stale_after,
        "checks": {inst.name: _yaml_check(inst) for inst in config.instances},
        **({"account_labels": dict(config.account_labels)} if config.account_labels else {}),
        **_yaml_delivery(config),
    }
    header = f"# converted from {config.source} by `monitorx config convert`\n"
    if not config.inhibit_rules:
        header += "# inhibit_rules: [] keeps delivery as it was; remove it for the default stale-data rule\n"
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)


def convert(path: Path) -> int:
    config = config_or_exit(lambda: load(path).check_problems())
    sys.stdout.write(to_yaml(config))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="monitorx config", description="Validate, inspect or convert a configuration."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="validate a file; exit 1 listing every problem").add_argument(
        "path", type=Path
    )
    show_p = sub.add_parser("show", help="print the effective (instance, check) list with params")
    show_p.add_argument("path", type=Path, nargs="?", help="default: $MONITORX_CONFIG or the built-in config")
    sub.add_parser("convert", help="print a legacy features.json as native YAML").add_argument(
        "path", type=Path
    )
    args = parser.parse_args(argv)
    if args.action == "check":
        return check(args.path)
    if args.action == "show":
        return show(config_path(args.path))
    return convert(args.path)
