"""Round-trip budgets: the alerter's, one alert at a time (the legacy default route: each alert
its own message at once), and the dispatcher's, one frame at a time. Round trips, not time, are
what a test can hold steady: each one costs both processes CPU and the pipeline's workers
latency on a shared machine (README, Performance). Counted at the client's socket, against the
real redis-server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from alerter.receivers import JsonlReceiver
from dispatcher.service import Dispatcher
from ingestor.normalize import normalize_account
from shared.keys import Keys
from shared.redisio import Publisher, ensure_group
from tests.helpers import wait_until
from tests.test_alerter import make_alert, make_alerter, publish
from tests.test_dispatch_and_run import ACC, CONFIG, plan_of, snap


@dataclass
class Counted:
    """A client on real connections that count what they send: one send per round trip (a
    pipeline sends all its commands at once). The count is this test's alone."""

    client: redis_lib.Redis
    sends: list[int]

    def round_trips(self, step: Any) -> int:
        before = len(self.sends)
        step()
        return len(self.sends) - before


@pytest.fixture
def counted(redis_url: str) -> Iterator[Counted]:
    client, sends = counting_client(redis_url, decode=True)
    yield Counted(client, sends)
    client.close()


def counting_client(redis_url: str, decode: bool, sends: list[int] | None = None) -> tuple[Any, list[int]]:
    """A client whose connections count every send into ``sends`` (a new list by default)."""
    counts: list[int] = [] if sends is None else sends

    class CountingConnection(redis_lib.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counts.append(1)
            super().send_packed_command(command, check_health)

    pool = redis_lib.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection, decode_responses=decode
    )
    return redis_lib.Redis(connection_pool=pool), counts


def started(r: redis_lib.Redis, path: Path) -> Any:
    """An alerter past its start (own pending entries read, the first scans for entries of dead
    replicas done); the next scans are a minute away, out of the steps counted."""
    alerter = make_alerter(r, [JsonlReceiver(path, "jsonl", group_key=False)], retry_idle_ms=120_000)
    for n in range(3):
        publish(r, make_alert(100 + n))
        alerter.step()
    return alerter


def test_one_alert_costs_the_router_four_round_trips_and_its_delivery_four(
    counted: Counted, tmp_path: Path
) -> None:
    alerter = started(counted.client, tmp_path / "out.jsonl")
    delivery = alerter.deliveries[0]
    publish(counted.client, make_alert(1))
    # read; route + take the due groups + next due; mute + told; flush + next due
    assert counted.round_trips(alerter.router.step) == 4
    # read the notice; the group, its ref and the silences; tell; send's record and ack
    assert counted.round_trips(delivery.step) == 4
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"alert-0001"' in lines[-1]


def test_an_idle_router_step_costs_two_round_trips(counted: Counted, tmp_path: Path) -> None:
    alerter = started(counted.client, tmp_path / "out.jsonl")
    assert counted.round_trips(alerter.router.step) == 2  # the read (it waits), take + next due


def test_a_dispatcher_step_over_one_frame_costs_five_round_trips_four_when_all_coalesce(
    redis_url: str, r: redis_lib.Redis
) -> None:
    client, sends = counting_client(redis_url, decode=True)
    rq_client, _ = counting_client(redis_url, decode=False, sends=sends)
    plan = plan_of(CONFIG)
    d = Dispatcher(r=client, rq_connection=rq_client, keys=Keys(), plan=plan, consumer="d1", block_ms=10)
    d.start()
    publisher = Publisher(r, Keys())
    publisher.publish([snap(1000.0, "1234.5")])
    d.step()  # the first step also claims and ticks: not counted
    publisher.publish([snap(1001.0, "1234.5", seq=1)])
    before = len(sends)
    # read; gates; latest-wins marks; counters and ack (both pairs' jobs still wait: coalesced)
    assert d.step() == 0 and len(sends) - before == 4
    publisher.publish([snap(1002.0, "1234.5", seq=2)])
    r.delete(Keys().queued("low", ACC))  # as a worker that took the low job does
    before = len(sends)
    assert d.step() == 1 and len(sends) - before == 5  # and the job


def test_a_consumer_waiting_on_the_stream_wakes_once_with_the_whole_frame(
    redis_url: str, r: redis_lib.Redis
) -> None:
    keys = Keys()
    ensure_group(r, keys.snapshots, "g")
    got: list[Any] = []
    reader = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    waiting = threading.Thread(
        target=lambda: got.append(reader.xreadgroup("g", "c", {keys.snapshots: ">"}, count=100, block=10_000))
    )
    waiting.start()
    wait_until(
        lambda: any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in r.client_list())
    )
    frame = [snap(1000.0, "1", seq=1)] + [
        normalize_account(f"BINANCE-AAZ{n:02d}-UM", {"USDTwalletBalance": "1"}, observed_at=1000.0, seq=1)
        for n in range(2, 14)
    ]
    Publisher(r, keys).publish(frame)
    waiting.join(timeout=10)
    assert len(got[0][0][1]) == 13  # not the first entry alone, then the rest in another read
