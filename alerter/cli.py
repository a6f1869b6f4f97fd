"""``monitorx alert`` (also ``python -m alerter``): deliver alerts from the stream to the sinks."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from alerter.deadman import Pinger
from alerter.inhibit import compile_rules
from alerter.notify import Receiver
from alerter.receivers import build_receiver, legacy_receivers
from alerter.route import build_route
from alerter.router import Router
from alerter.selfcheck import SelfCheck
from alerter.service import ANY_SINK, Delivery, dead_letter
from engine.plan import load_config
from shared import keys as K
from shared.cli import EXIT_USAGE, config_or_exit, settings_or_exit
from shared.config import Config, default_route, secret_environment
from shared.heartbeat import Beater
from shared.keys import Keys
from shared.lifecycle import Stopper, setup_logging
from shared.redisio import Outage, connect, ride_out
from shared.settings import AlertSettings

log = logging.getLogger(__name__)

BATCH_WINDOW = 0.05
"""Seconds: the router and each delivery loop, after a step that handled something, start the
next one no sooner than this after it began (``shared.redisio.ride_out``), so under load alerts
and notices are taken in batches, with one set of round trips and one wake-up per batch instead
of per alert; an alert reaching an idle alerter is handled at once, and a full batch (a
backlog) is followed at once. In the saturating bench (an alert for every fourth evaluation, two
workers on two cores) the alerter woke for every alert, and its wake-ups cost the workers 10-20%
of their evaluations."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx alert",
        description="Route, group and deliver alerts from the MonitorX alerts stream: to the "
        "receivers and the route tree of the configuration (MONITORX_CONFIG), or, when it has no "
        "route, each alert to every sink of the settings: console (MONITORX_CONSOLE), a JSONL file "
        "(MONITORX_ALERTS_JSONL), Slack (MONITORX_SLACK_WEBHOOK_URL) and an HTTP webhook "
        "(MONITORX_WEBHOOK_URL). Silences (monitorx silence) and inhibit rules apply.",
    )
    parser.add_argument("--console", action="store_true", help="also print each alert on standard output")
    parser.add_argument("--jsonl", type=Path, help="append delivered alerts to this JSONL file")
    parser.add_argument(
        "--consumer",
        help="consumer name in the alert groups, keep it stable across restarts "
        "(default: MONITORX_CONSUMER, else alert-<hostname>)",
    )
    return parser


def _settings(args: argparse.Namespace) -> AlertSettings:
    settings = settings_or_exit(AlertSettings)
    overrides: dict[str, object] = {}
    if args.console:
        overrides["console"] = True
    if args.jsonl is not None:
        overrides["alerts_jsonl"] = args.jsonl
    if args.consumer:
        overrides["consumer"] = args.consumer
    return settings.model_copy(update=overrides)


def receivers_of(config: Config, settings: AlertSettings) -> list[Receiver]:
    """The configuration's receivers when it has a route tree, else the sinks of the settings.
    Raises ValueError (never holding a secret) for a receiver that cannot be built."""
    if config.route is None:
        return legacy_receivers(settings)
    env = secret_environment()
    return [build_receiver(name, spec, env) for name, spec in config.receivers.items()]


@dataclass
class Alerter:
    """One alerter process: the router and one delivery loop per receiver."""

    router: Router
    deliveries: list[Delivery]

    def start(self) -> Alerter:
        self.router.start()
        for delivery in self.deliveries:
            delivery.start()
        return self

    def step(self) -> int:
        """Route and flush, then one step of each delivery loop (tests; the process runs each
        loop in its own thread)."""
        return self.router.step() + sum(d.step() for d in self.deliveries)


def build_alerter(
    r: redis.Redis,
    settings: AlertSettings,
    config: Config,
    receivers: Sequence[Receiver],
    stopping: Callable[[], bool] = lambda: False,
    **options: Any,
) -> Alerter:
    """The router over ``config``'s route tree (or the default route to ``receivers``) and
    inhibit rules, and a delivery loop per receiver. ``options`` go to every loop (``clock``,
    ``block_ms``...)."""
    keys = settings.keys
    node = config.route if config.route is not None else default_route([x.name for x in receivers])
    rules = compile_rules(config.inhibit_rules)
    clock = options.get("clock")
    extra = {k: v for k, v in options.items() if k in ("clock", "block_ms")}
    extra["claim_idle_ms"] = options.get("retry_idle_ms", settings.retry_idle_ms)
    router = Router(r, keys, build_route(node), rules, settings.consumer, _invalid(r, keys, clock), **extra)
    loops = [
        Delivery.from_settings(r, settings, receiver, rules=rules, stopping=stopping, **options)
        for receiver in receivers
    ]
    return Alerter(router, loops)


def _invalid(r: redis.Redis, keys: Keys, clock: Any) -> Callable[[str, dict[str, str], str], None]:
    """What the router does with an unreadable alert entry: dead-letter it for every receiver."""

    def put(entry_id: str, fields: dict[str, str], why: str) -> None:
        now = clock() if clock is not None else time.time()
        pipe = r.pipeline(transaction=True)
        dead_letter(pipe, keys, fields.get("alert") or repr(fields), ANY_SINK, why, 0, now)
        pipe.execute()
        log.error("invalid alert entry %s moved to %s: %s", entry_id, keys.dead, why[:200])

    return put


@dataclass
class Beating:
    """The router's loop with the alerter's heartbeat: after each router step, when the beater
    is due (every 5 s), one pipelined ``XINFO GROUPS`` of every receiver's notify stream gives
    the details ``receivers`` (names) and ``backlog`` (receiver -> notices its delivery loop
    has not finished: pending plus not yet read)."""

    router: Router
    beater: Beater
    receivers: list[str]

    def start(self) -> Router:
        return self.router.start()

    @property
    def behind(self) -> bool:
        return self.router.behind

    def step(self) -> int:
        done = self.router.step()
        if self.beater.due():
            self.beater.beat({"receivers": self.receivers, "backlog": self.backlog()})
        return done

    def backlog(self) -> dict[str, int]:
        """Notices waiting per receiver: the deliver group's pending entries plus its lag (when
        Redis can tell it); 0 for a stream or group not there yet."""
        pipe = self.beater.r.pipeline(transaction=False)
        for name in self.receivers:
            pipe.xinfo_groups(self.beater.keys.notify(name))
        replies = pipe.execute(raise_on_error=False)
        return {name: _waiting(reply) for name, reply in zip(self.receivers, replies, strict=True)}


def _waiting(groups: Any) -> int:
    """Pending plus unread notices of the deliver group in an XINFO GROUPS reply (or error)."""
    if isinstance(groups, Exception):
        return 0
    for group in groups:
        if group.get("name") == K.DELIVER_GROUP:
            return int(group.get("pending") or 0) + int(group.get("lag") or 0)
    return 0


def _loop(target: Any, stopper: Stopper, name: str, batch_window: float = 0.0) -> None:
    """Step until stopped, riding out Redis outages of any length (``shared.redisio.ride_out``):
    after every Redis error ``start()`` again (a Redis that came back empty gets its groups)."""
    ride_out(target, stopper, Outage(name), batch_window)


def run(
    alerter: Alerter, stopper: Stopper, beater: Beater | None = None, selfcheck: SelfCheck | None = None
) -> None:
    """The router in this thread, each delivery loop in its own, so a receiver that hangs or is
    down never delays the others, and the alerts about MonitorX (``selfcheck``) in one more. All
    stop together on SIGTERM/SIGINT, each after its entry. With a ``beater``, the router's loop
    writes the heartbeat (:class:`Beating`); it is deleted once every loop has stopped."""
    threads = [
        threading.Thread(
            target=_loop, args=(d, stopper, f"alerter {d.receiver.name}", BATCH_WINDOW), name=d.receiver.name
        )
        for d in alerter.deliveries
    ]
    if selfcheck is not None:
        args = (selfcheck, stopper, "alerter selfcheck")
        threads.append(threading.Thread(target=_loop, args=args, name="selfcheck"))
    for thread in threads:
        thread.start()
    receivers = [d.receiver.name for d in alerter.deliveries]
    router = alerter.router if beater is None else Beating(alerter.router, beater, receivers)
    _loop(router, stopper, "alerter router", BATCH_WINDOW)
    for thread in threads:
        thread.join()
    if beater is not None:
        beater.stop()


def start_deadman(
    r: redis.Redis, settings: AlertSettings, router: Router, stopper: Stopper
) -> threading.Thread | None:
    """The dead-man's switch (``alerter.deadman``) in its own thread, fed by the router's canary
    arrivals, until stopped; None without ``MONITORX_DEADMAN_URL``."""
    if settings.deadman_url is None:
        return None
    pinger = Pinger(r, settings.keys, settings.deadman_url)
    router.on_canary = pinger.arrived
    thread = threading.Thread(target=_loop, args=(pinger, stopper, "alerter deadman"), name="deadman")
    thread.start()
    log.info("dead-man's switch on: a ping at each canary arrival")
    return thread


def _close(delivery: Delivery) -> None:
    try:
        delivery.close()
    except redis.RedisError as exc:
        log.warning("could not leave the consumer group of %s: %s", delivery.stream, exc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    path = settings.config
    config = config_or_exit(lambda: load_config(path))
    try:
        receivers = receivers_of(config, settings)
    except ValueError as exc:
        sys.stderr.write(f"invalid setting: {exc}\n")  # the message never holds a secret
        raise SystemExit(EXIT_USAGE) from None
    if not receivers:
        log.warning(
            "no receiver configured (MONITORX_CONSOLE, MONITORX_ALERTS_JSONL, MONITORX_SLACK_WEBHOOK_URL, "
            "MONITORX_WEBHOOK_URL, --console, or receivers: in the configuration): alerts are routed "
            "nowhere"
        )
    stopper = Stopper().install()
    r = connect(str(settings.redis_url))
    alerter = build_alerter(r, settings, config, receivers, stopping=stopper.is_set)
    deadman = start_deadman(r, settings, alerter.router, stopper)
    names = ", ".join(x.name for x in receivers) or "nothing"
    log.info("alerter %s delivering to: %s", settings.consumer, names)
    every = settings.self_check_seconds
    selfcheck = SelfCheck(r, settings.keys, wait=stopper.wait, every=every) if every else None
    run(alerter, stopper, Beater(r, settings.keys, "alerter", settings.consumer), selfcheck)
    if deadman is not None:
        deadman.join()
    for delivery in alerter.deliveries:
        _close(delivery)
    log.info("alerter %s stopped", settings.consumer)
    return 0
