"""``monitorx config check|show|convert``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from engine.plan import Plan, build, builtin_config
from engine.registry import Registry
from shared.cli import config_or_exit
from shared.config import Config, Instance, load


def _plan(path: Path | None) -> Plan:
    config = builtin_config() if path is None else load(path)
    return build(config, Registry.discover())


def check(path: Path) -> int:
    plan = config_or_exit(lambda: _plan(path))
    print(f"{path}: OK ({plan.config.format}), {len(plan.bound)} instances")
    return 0


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
    return out


def to_yaml(config: Config) -> str:
    doc = {
        "version": 1,
        "stale_after": config.stale_after,
        "checks": {inst.name: _yaml_check(inst) for inst in config.instances},
    }
    header = f"# converted from {config.source} by `monitorx config convert`\n"
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
        return show(args.path or _env_config())
    return convert(args.path)


def _env_config() -> Path | None:
    import os

    value = os.environ.get("MONITORX_CONFIG")
    return Path(value) if value else None
