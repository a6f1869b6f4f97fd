"""The Galio simulator: pure frame generation, and the real WebSocket server on loopback."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ingestor.normalize import normalize_account
from shared.models import Snapshot
from simulator.cli import build_parser, main, scenario_from_args
from simulator.frames import (
    OKX_ACCOUNT,
    Frame,
    FrameGenerator,
    Scenario,
    binance_account,
    frame_at,
    preset,
)
from simulator.server import ReplayOptions, SimulatorConfig, SimulatorServer, read_recording

T = TypeVar("T")
TIMEOUT = 5.0
ACCOUNT_1 = "BINANCE-AAZ01-UM"
ACCOUNT_2 = "BINANCE-AAZ02-UM"
LOW_THRESHOLDS = {"USDT": 10000.0, "USDC": 10000.0, "BNB": 3.0}
MARGIN_THRESHOLDS = {
    "initial": ("maintotalInitialMargin", 0.7),
    "maint": ("maintotalMaintMargin", 0.2),
    "position": ("maintotalPositionInitialMargin", 0.75),
}
CONTRACT_SIZES = {"ETH": {"USDT": 0.1, "USDC": 0.001}, "BTC": {"USDT": 0.01, "USDC": 0.0001}}


# helpers


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


async def eventually(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll until predicate() is truthy, failing after the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def recv_text(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str), "the simulator sends text frames"
    return message


async def recv_frames(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await recv_text(ws)) for _ in range(count)]


def auth_frame(username: str = "alice", password: str = "s3cret") -> str:
    return json.dumps({"username": username, "password": password})


def with_auth(**fields: Any) -> SimulatorConfig:
    defaults: dict[str, Any] = {"hz": 50, "ping_interval": None}
    return SimulatorConfig(username="alice", password="s3cret", **{**defaults, **fields})


async def serving(config: SimulatorConfig, body: Callable[[SimulatorServer], Awaitable[T]]) -> T:
    async with SimulatorServer(config) as server:
        return await body(server)


def snapshots(frame: dict[str, Any], t: float = 0.0) -> dict[str, Snapshot]:
    return {account: normalize_account(account, obj, t) for account, obj in frame["pos"].items()}


def breaches(snap: Snapshot) -> set[str]:
    """The legacy checks' triggers, at the legacy configuration's thresholds."""
    if snap.account == OKX_ACCOUNT:
        return hedge_breaches(snap)
    return low_breaches(snap) | margin_breaches(snap) | delta_breaches(snap)


def low_breaches(snap: Snapshot) -> set[str]:
    values = snap.values
    return {
        f"low:{asset}"
        for asset, limit in LOW_THRESHOLDS.items()
        if 0 < values.get(f"{asset}walletBalance", 0.0) < limit
    }


def margin_breaches(snap: Snapshot) -> set[str]:
    values = snap.values
    wallet = values.get("maintotalWalletBalance") or 1.0
    out = {name for name, (key, limit) in MARGIN_THRESHOLDS.items() if values.get(key, 0.0) / wallet > limit}
    usdc = values.get("USDCwalletBalance", 0.0)
    ratio = math.inf if usdc == 0 else values.get("USDTwalletBalance", 0.0) / usdc
    return out | ({"ratio"} if not 0.6 <= ratio <= 2.0 else set())


def pair_deltas(snap: Snapshot) -> dict[str, float]:
    """Legacy delta check: |v1 - v2| per base, both legs at the first leg's average price."""
    groups: dict[str, list[str]] = {}
    for key in snap.raw:
        if not key.endswith("Avg-Price") and key[-4:] in {"USDT", "USDC"}:
            groups.setdefault(key[:-4], []).append(key)
    deltas = {}
    for base, keys in groups.items():
        price = snap.values.get(f"{keys[0]}Avg-Price")
        if len(keys) == 2 and price:
            first, second = (snap.values[key] * price for key in keys)
            deltas[base] = abs(abs(first) - abs(second))
    return deltas


def delta_breaches(snap: Snapshot) -> set[str]:
    return {f"delta:{base}" for base, delta in pair_deltas(snap).items() if delta > 100}


def hedge_breaches(snap: Snapshot) -> set[str]:
    out = set()
    for base, sizes in CONTRACT_SIZES.items():
        usdc, usdt = snap.values[f"{base}-USDC-SWAP"], snap.values[f"{base}-USDT-SWAP"]
        diff = usdc * sizes["USDC"] + usdt * sizes["USDT"]
        if abs(diff * snap.values[f"{base}-USDT-SWAPAvg-Price"]) > 100:
            out.add(f"hedge:{base}")
    return out


def write_recording(path: Path, texts: list[str], spacing: float) -> None:
    lines = [
        json.dumps({"received_at": 1_700_000_000.0 + i * spacing, "frame": t}) for i, t in enumerate(texts)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


ODD_TEXTS = [
    '{"pos": {"BINANCE-AAZ01-UM": {"USDTwalletBalance": "12000.5"}}}',
    '{ "pos" :{"OKX-AAZ-TRADING":{"ETH-USDT-SWAP":-30,  "ETH-USDC-SWAP":3000}} }',
    "{not json at all",
    '{"pos": {"BINANCE-AAZ01-UM": {"note": "caf\\u00e9 ✓", "BNBwalletBalance": null}}, "x": 1}',
    "[]",
]


# frames: pure and deterministic


def test_accounts_and_keys() -> None:
    frame = frame_at(Scenario(accounts=3), 1.0)
    assert frame is not None
    assert list(frame["pos"]) == ["BINANCE-AAZ01-UM", ACCOUNT_2, "BINANCE-AAZ03-UM", OKX_ACCOUNT]
    binance = frame["pos"][ACCOUNT_1]
    for key in ("BTCUSDT", "BTCUSDC", "BTCUSDTAvg-Price", "ETHUSDT", "ETHUSDCAvg-Price", "USDTwalletBalance",
                "USDCwalletBalance", "BNBwalletBalance", "USDTmaintMargin", "USDTmaxWithdrawAmount",
                "maintotalWalletBalance", "maintotalPositionInitialMargin", "mainmaxWithdrawAmount",
                "BTCUSDTinitialMargin", "BTCUSDTcrossUnPnl"):  # fmt: skip
        assert key in binance, key
    values = snapshots(frame)[ACCOUNT_1].values
    assert values["BTCUSDT"] * values["BTCUSDC"] < 0, "the legs of a pair are on opposite sides"
    okx = snapshots(frame)[OKX_ACCOUNT].values
    assert okx["ETH-USDT-SWAP"] * 0.1 + okx["ETH-USDC-SWAP"] * 0.001 == pytest.approx(0, abs=1e-9)
    without_okx = frame_at(Scenario(accounts=2, okx=False), 1.0)
    assert without_okx is not None and list(without_okx["pos"]) == [ACCOUNT_1, ACCOUNT_2]


def test_frames_are_deterministic() -> None:
    scenario = preset("demo", seed=42)
    times = [0.0, 0.5, 3.25, 29.0, 3600.0]
    assert [frame_at(scenario, t) for t in times] == [FrameGenerator(scenario).frame(t) for t in times]
    assert FrameGenerator(scenario).text(0.5) == FrameGenerator(scenario).text(0.5)
    assert frame_at(scenario, 0.5) != frame_at(preset("demo", seed=43), 0.5)
    assert frame_at(scenario, 0.5) != frame_at(scenario, 1.0), "values move between frames"


def test_frames_normalize_cleanly_and_carry_numeric_strings() -> None:
    generator = FrameGenerator(Scenario(accounts=4, seed=3))
    strings = 0
    for t in range(0, 200, 5):
        frame = generator.frame(float(t))
        assert frame is not None
        for snap in snapshots(frame, t).values():
            assert snap.invalid == {}
            assert all(isinstance(v, float | int | str) for v in snap.raw.values())
            strings += sum(isinstance(v, str) for v in snap.raw.values())
            assert len(snap.values) == len(snap.raw)
    assert strings > 0, "some figures come as numeric strings, as Galio sends them"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_healthy_values_never_breach(seed: int) -> None:
    generator = FrameGenerator(Scenario(accounts=5, seed=seed))
    for i in range(400):
        t = i * 9.37
        frame = generator.frame(t)
        assert frame is not None
        for account, snap in snapshots(frame, t).items():
            assert breaches(snap) == set(), (account, t)
            if account != OKX_ACCOUNT:
                assert_comfortably_healthy(snap)


def assert_comfortably_healthy(snap: Snapshot) -> None:
    v = snap.values
    wallet = v["maintotalWalletBalance"]
    assert 20000 <= v["USDTwalletBalance"] <= 60000
    assert 20000 <= v["USDCwalletBalance"] <= 60000
    assert 5 <= v["BNBwalletBalance"] <= 20
    assert 0.8 <= v["USDTwalletBalance"] / v["USDCwalletBalance"] <= 1.6
    assert wallet == pytest.approx(v["USDTwalletBalance"] + v["USDCwalletBalance"], abs=0.02)
    assert v["maintotalInitialMargin"] / wallet < 0.5
    assert v["maintotalMaintMargin"] / wallet < 0.1
    assert v["maintotalPositionInitialMargin"] / wallet < 0.5


def test_demo_timeline() -> None:
    scenario = preset("demo", seed=5)
    assert (scenario.low_at, scenario.pause_at, scenario.pause_for) == (3.0, 8.0, 20.0)
    generator = FrameGenerator(scenario)
    for t in (0.0, 1.0, 2.5, 2.99):
        assert_demo_frame(generator.frame(t), low=False)
    for t in (3.0, 5.0, 7.99):
        assert_demo_frame(generator.frame(t), low=True)
    for t in (8.0, 8.5, 15.0, 27.99):
        assert generator.frame(t) is None, t
    for t in (28.0, 30.0, 120.0, 3600.0):
        assert_demo_frame(generator.frame(t), low=True)


def assert_demo_frame(frame: dict[str, Any] | None, low: bool) -> None:
    assert frame is not None
    snaps = snapshots(frame)
    usdt = snaps[ACCOUNT_1].values["USDTwalletBalance"]
    assert (1000 <= usdt <= 9000) if low else usdt >= 20000
    expected = {"low:USDT", "ratio"} if low else set()
    assert breaches(snaps[ACCOUNT_1]) == expected, "a low USDT balance also skews USDT/USDC"
    assert all(breaches(s) == set() for a, s in snaps.items() if a != ACCOUNT_1)


def test_delta_drift() -> None:
    generator = FrameGenerator(Scenario(accounts=3, delta_at=5.0, delta_account=2, seed=9))
    before, after = generator.frame(4.9), generator.frame(5.0)
    assert before is not None and after is not None
    assert all(breaches(s) == set() for s in snapshots(before).values())
    snaps = snapshots(after)
    assert breaches(snaps[ACCOUNT_2]) == {"delta:BTC"}
    assert pair_deltas(snaps[ACCOUNT_2])["BTC"] > 1000
    assert all(breaches(s) == set() for a, s in snaps.items() if a != ACCOUNT_2)


WALLET_KEYS = (
    "USDTwalletBalance",
    "USDCwalletBalance",
    "BNBwalletBalance",
    "USDTcrossWalletBalance",
    "USDCcrossWalletBalance",
    "maintotalWalletBalance",
    "maintotalCrossWalletBalance",
)
MOVING_KEYS = (
    "BTCUSDTAvg-Price",
    "ETHUSDCAvg-Price",
    "USDTunrealizedProfit",
    "USDCmarginBalance",
    "USDTavailableBalance",
    "maintotalMaintMargin",
    "BTCUSDTinitialMargin",
    "ETHUSDTcrossUnPnl",
)


def wire_forms(frames: list[Frame], account: str, key: str) -> set[str]:
    """The distinct texts a figure is sent as across frames."""
    return {json.dumps(frame["pos"][account][key]) for frame in frames}


def test_quiet_desk_keeps_wallets_still_while_the_market_moves() -> None:
    times = [k / 5 for k in range(0, 300, 7)]  # 5 Hz ticks across a minute
    quiet = [FrameGenerator(preset("quiet", seed=4)).frame(t) for t in times]
    steady = [FrameGenerator(preset("steady", accounts=12, okx=False, seed=4)).frame(t) for t in times]
    assert all(quiet) and all(steady)
    frames, moving = cast(list[Frame], quiet), cast(list[Frame], steady)
    accounts = [binance_account(i) for i in range(1, 13)]
    assert all(list(frame["pos"]) == accounts for frame in frames), "12 Binance accounts, no OKX"
    for account in accounts:
        for key in WALLET_KEYS:
            assert len(wire_forms(frames, account, key)) == 1, (account, key)
            assert len(wire_forms(moving, account, key)) > len(times) // 2, "steady wallets move"
        for key in MOVING_KEYS:
            assert len(wire_forms(frames, account, key)) > len(times) // 2, (account, key)
        assert all(breaches(snapshots(frame)[account]) == set() for frame in frames)
    low = FrameGenerator(preset("quiet", low_at=10.0))
    usdt = {snapshots(f)[ACCOUNT_1].values["USDTwalletBalance"] for f in map(low.frame, (10.0, 30.0)) if f}
    assert len(usdt) == 1 and usdt.pop() < 10000, "a low balance is low and still"


def test_cli_scenario_defaults_and_accounts_override() -> None:
    def scenario(*argv: str) -> Scenario:
        return scenario_from_args(build_parser().parse_args(list(argv)))

    assert (scenario("--scenario", "quiet").accounts, scenario("--scenario", "quiet").okx) == (12, False)
    assert scenario("--scenario", "quiet", "--accounts", "5").accounts == 5
    assert scenario("--scenario", "steady").accounts == scenario().accounts == 3


def test_scenario_validation() -> None:
    with pytest.raises(ValueError, match="low_account"):
        Scenario(accounts=2, low_at=1.0, low_account=3)
    with pytest.raises(ValueError, match="unknown scenario"):
        preset("nope")
    with pytest.raises(ValueError, match="username and password"):
        SimulatorConfig(username="alice")


# the server


def test_auth_accepted_frames_arrive_and_normalize() -> None:
    async def body(server: SimulatorServer) -> list[dict[str, Any]]:
        async with connect(server.url, ping_interval=None) as ws:
            await ws.send(auth_frame())
            return await recv_frames(ws, 3)

    frames = run(serving(with_auth(), body))
    for frame in frames:
        assert set(frame) == {"pos"}
        assert list(frame["pos"]) == ["BINANCE-AAZ01-UM", ACCOUNT_2, "BINANCE-AAZ03-UM", OKX_ACCOUNT]
        for snap in snapshots(frame).values():
            assert snap.invalid == {} and snap.values


@pytest.mark.parametrize(
    "first",
    [
        auth_frame(password="wrong"),
        auth_frame(username="bob"),
        json.dumps({"username": "alice", "password": "s3cret", "extra": 1}),
        json.dumps({"username": "alice"}),
        json.dumps(["alice", "s3cret"]),
        "not json",
        b'{"username": "alice", "password": "s3cret"}',
    ],
    ids=["password", "username", "extra-key", "missing-key", "array", "junk", "binary"],
)
def test_bad_auth_closes_4001_without_frames(first: str | bytes) -> None:
    async def body(server: SimulatorServer) -> tuple[int | None, str | None]:
        async with connect(server.url, ping_interval=None) as ws:
            await ws.send(first)
            with pytest.raises(ConnectionClosed):
                await recv_text(ws)  # the first thing received is the close, not a frame
            return ws.close_code, ws.close_reason

    assert run(serving(with_auth(), body)) == (4001, "auth failed")


def test_silent_client_is_refused_after_auth_timeout() -> None:
    async def body(server: SimulatorServer) -> int | None:
        async with connect(server.url, ping_interval=None) as ws:
            with pytest.raises(ConnectionClosed):
                await recv_text(ws)
            return ws.close_code

    assert run(serving(with_auth(auth_timeout=0.2), body)) == 4001


def test_without_credentials_streams_and_ignores_an_auth_frame() -> None:
    async def body(server: SimulatorServer) -> None:
        async with (
            connect(server.url, ping_interval=None) as quiet,
            connect(server.url, ping_interval=None) as ws,
        ):
            await ws.send(auth_frame())
            for client in (quiet, ws):
                frames = await recv_frames(client, 2)
                assert all("pos" in frame for frame in frames)

    run(serving(SimulatorConfig(hz=50, ping_interval=None), body))


def test_wire_frames_follow_the_scenario_clock_across_reconnects() -> None:
    config = SimulatorConfig(scenario=Scenario(seed=11), hz=40, ping_interval=None)
    generator = FrameGenerator(config.scenario)

    def tick_of(text: str, server: SimulatorServer) -> int:
        last = int(server.elapsed() * config.hz) + 2
        return next(k for k in range(last) if generator.text(k / config.hz) == text)

    async def body(server: SimulatorServer) -> list[int]:
        ticks = []
        for _ in range(2):
            async with connect(server.url, ping_interval=None) as ws:
                ticks += [tick_of(await recv_text(ws), server) for _ in range(2)]
        return ticks

    ticks = run(serving(config, body))
    assert ticks == sorted(set(ticks)), "each frame is the generator's frame at a later tick"


def test_no_frames_during_pause_then_recovery() -> None:
    scenario = Scenario(pause_at=0.0, pause_for=0.5)
    config = SimulatorConfig(scenario=scenario, hz=50, ping_interval=None)

    async def body(server: SimulatorServer) -> float:
        async with connect(server.url, ping_interval=None) as ws:
            await recv_text(ws)
            return server.elapsed()

    assert run(serving(config, body)) >= 0.5


def test_max_frames_ends_the_stream() -> None:
    async def body(server: SimulatorServer) -> int:
        async with connect(server.url, ping_interval=None) as ws:
            await ws.send(auth_frame())
            await recv_frames(ws, 3)
            await asyncio.wait_for(server.wait_finished(), TIMEOUT)
            return server.frames_sent

    assert run(serving(with_auth(max_frames=3), body)) == 3


def test_full_speed_stream() -> None:
    config = SimulatorConfig(scenario=preset("bench", accounts=12), hz=0, ping_interval=None, max_frames=200)

    async def body(server: SimulatorServer) -> list[dict[str, Any]]:
        async with connect(server.url, ping_interval=None) as ws:
            frames = await recv_frames(ws, 200)
            await asyncio.wait_for(server.wait_finished(), TIMEOUT)
            return frames

    frames = run(serving(config, body))
    assert all(len(frame["pos"]) == 13 for frame in frames)
    assert len({json.dumps(frame) for frame in frames}) == 200, "every frame differs"


def test_broadcast_injects_arbitrary_frames() -> None:
    async def body(server: SimulatorServer) -> list[str | bytes]:
        async with connect(server.url, ping_interval=None) as ws:
            await ws.send(auth_frame())
            await eventually(lambda: server.clients == 1, "the client to be authenticated")
            assert await server.broadcast("{broken") == 1
            assert await server.broadcast(b"\x00binary") == 1
            return [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(2)]

    # hz so low that the only scenario frame (t=0) goes out before the client is in
    assert run(serving(with_auth(hz=0.001), body)) == ["{broken", b"\x00binary"]


def test_stop_closes_clients_going_away() -> None:
    async def body() -> int | None:
        server = SimulatorServer(SimulatorConfig(hz=50, ping_interval=None))
        await server.start()
        async with connect(server.url, ping_interval=None) as ws:
            await recv_text(ws)
            await server.stop()
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            return ws.close_code

    assert run(body()) == 1001


# replay


def test_replay_sends_recorded_texts_unchanged_in_order(tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    write_recording(recording, ODD_TEXTS, spacing=1.0)
    assert [r.frame for r in read_recording(recording)] == ODD_TEXTS
    config = SimulatorConfig(replay=ReplayOptions(recording, speed=20), ping_interval=None)

    async def body(server: SimulatorServer) -> tuple[list[str], float]:
        async with connect(server.url, ping_interval=None) as ws:
            first = await recv_text(ws)
            started = time.monotonic()
            rest = [await recv_text(ws) for _ in ODD_TEXTS[1:]]
            await asyncio.wait_for(server.wait_finished(), TIMEOUT)
            return [first, *rest], time.monotonic() - started

    texts, took = run(serving(config, body))
    assert texts == ODD_TEXTS
    assert took >= 0.9 * 4 * 1.0 / 20, "recorded spacing divided by speed is kept"


def test_replay_fast_with_loop(tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    write_recording(recording, ODD_TEXTS[:3], spacing=60.0)
    config = SimulatorConfig(
        replay=ReplayOptions(recording, speed=0, loop=True), max_frames=7, username="u", password="p"
    )

    async def body(server: SimulatorServer) -> list[str]:
        async with connect(server.url, ping_interval=None) as ws:
            await ws.send(json.dumps({"username": "u", "password": "p"}))
            texts = [await recv_text(ws) for _ in range(7)]
            await asyncio.wait_for(server.wait_finished(), TIMEOUT)
            return texts

    assert run(serving(config, body)) == (ODD_TEXTS[:3] * 3)[:7]


def test_replay_rejects_malformed_recording(tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    recording.write_text('{"received_at": 1.0, "frame": "{}"}\n\n{"frame": "{}"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rec.jsonl:3"):
        list(read_recording(recording))
    with pytest.raises(FileNotFoundError):
        run(SimulatorServer(SimulatorConfig(replay=ReplayOptions(tmp_path / "missing.jsonl"))).start())


# the command line


def test_cli_serves_for_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0", "--seconds", "0.2", "--scenario", "steady", "--log-level", "warning"]) == 0
    assert capsys.readouterr().out.startswith("simulator listening on ws://127.0.0.1:")


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0", "--username", "alice"]) == 2
    assert main(["--port", "0", "--low-account", "9", "--accounts", "2"]) == 2
    assert "simulator:" in capsys.readouterr().err


def test_cli_process_streams_and_stops_on_sigterm(repo_root: Path) -> None:
    env = {**os.environ, "MONITORX_GALIO_USERNAME": "alice", "MONITORX_GALIO_PASSWORD": "s3cret"}
    command = [sys.executable, "-m", "simulator", "--port", "0", "--hz", "50", "--log-level", "warning"]
    proc = subprocess.Popen(command, cwd=repo_root, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("ws://127.0.0.1:")

        async def one_frame() -> dict[str, Any]:
            async with connect(url, ping_interval=None) as ws:
                await ws.send(auth_frame())
                return (await recv_frames(ws, 1))[0]

        assert "pos" in run(one_frame())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()
