"""``monitorx``: one console script, one subcommand per process plus tools.

Each process subcommand forwards its arguments to that package's ``main`` (also runnable as
``python -m <package>``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module

COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("ingestor.cli", "connect to Galio and publish snapshots"),
    "dispatch": ("dispatcher.cli", "route snapshots to check jobs"),
    "worker": ("workers.cli", "run check jobs (an RQ worker)"),
    "alert": ("alerter.cli", "route, group and deliver alerts to the receivers"),
    "alerts": ("monitorx.alertscmd", "what fires now and why it is (not) notified; the send log"),
    "simulate": ("simulator.cli", "a Galio-compatible feed with scripted incidents"),
    "demo": ("monitorx.demo", "the whole pipeline on a private Redis and the simulator"),
    "config": ("monitorx.configcmd", "check, show or convert a configuration"),
    "silence": ("monitorx.silencecmd", "add, list or expire silences (mute alerts by label)"),
    "dlq": ("monitorx.dlqcmd", "list, replay or purge dead letters (alerts given up on)"),
    "status": ("monitorx.statuscmd", "is MonitorX working: problems first, then every figure (--json)"),
    "health": ("monitorx.healthcmd", "exit 0 when a process of --role on this host has a fresh heartbeat"),
    "web": ("monitorx.web", "the status page, /api/status and Prometheus /metrics over HTTP"),
    "acl": ("monitorx.aclcmd", "print the Redis ACL file: one least-privilege user per service"),
    "bench": ("monitorx.bench", "benchmark bare RQ against the pipeline"),
    "backtest": ("monitorx.backtest", "replay a recording through the checks offline"),
}


def _usage() -> str:
    lines = ["usage: monitorx COMMAND [ARGS...]  (monitorx COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0 if args else 2
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"monitorx: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    run: Callable[[list[str]], int] = import_module(entry[0]).main
    return run(args[1:])
