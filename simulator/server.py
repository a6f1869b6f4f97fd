"""A Galio-compatible WebSocket server: scenario frames, or a recording, pushed to every client.

Session, as the feed contract describes it: with credentials configured, a client's first frame
must be exactly ``{"username": ..., "password": ...}`` with matching values, else the connection
is closed with code 4001 (reason ``auth failed``) before any frame is sent; without credentials
every client is streamed to at once and whatever it sends is ignored. The server never needs a
ping from a client (it pings clients itself every ``ping_interval`` seconds, None for never).

One task produces the stream for all authenticated clients:

- scenario mode: every ``1/hz`` seconds, the scenario's frame at ``t`` = seconds since the server
  started (tick ``k`` has ``t = k/hz`` exactly, missed ticks are skipped), so a client that
  reconnects sees the scenario carry on; nothing during a scripted pause;
- replay mode: the ``frame`` texts of a JSONL recording, byte for byte, spaced like their
  ``received_at`` values divided by ``speed``; the replay starts when the first client is in.

``hz`` or ``speed`` of 0 (or infinity) means as fast as the clients take frames. Frames are only
generated while a client is connected; ``max_frames`` stops the stream after that many frames
reached at least one client (connections stay open). :meth:`SimulatorServer.broadcast` sends any
extra text (or binary) frame to every authenticated client, e.g. a malformed frame in a test.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, TypeGuard

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from simulator.frames import FrameGenerator, Scenario

logger = logging.getLogger(__name__)

AUTH_FAILED_CODE = 4001
AUTH_FAILED_REASON = "auth failed"
PAUSE_POLL = 0.01
"""Seconds between looks at the clock during a pause when streaming as fast as possible."""


@dataclass(frozen=True)
class ReplayOptions:
    """Replay a recording written by ``monitorx ingest --record``."""

    path: Path
    speed: float = 1.0
    """Divides the recorded spacing; 0 or infinity sends as fast as possible."""
    loop: bool = False

    def __post_init__(self) -> None:
        if math.isnan(self.speed) or self.speed < 0:
            raise ValueError("speed must be >= 0")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything a :class:`SimulatorServer` needs. Port 0 binds a free port."""

    scenario: Scenario = field(default_factory=Scenario)
    host: str = "127.0.0.1"
    port: int = 0
    username: str | None = None
    password: str | None = None
    hz: float = 2.0
    """Scenario frames per second; 0 or infinity sends as fast as possible."""
    max_frames: int | None = None
    replay: ReplayOptions | None = None
    ping_interval: float | None = 20.0
    auth_timeout: float = 10.0
    """Seconds a client has to send its auth frame."""

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("configure both username and password, or neither")
        if math.isnan(self.hz) or self.hz < 0:
            raise ValueError("hz must be >= 0")
        if self.max_frames is not None and self.max_frames < 0:
            raise ValueError("max_frames must be >= 0")


@dataclass(frozen=True)
class RecordedFrame:
    """One line of a recording."""

    received_at: float
    frame: str


def read_recording(path: Path) -> Iterator[RecordedFrame]:
    """The frames of a JSONL recording, in file order (blank lines are skipped); raises
    ValueError naming the line when one is not ``{"received_at": <number>, "frame": <text>}``."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield _parse_record(line, f"{path}:{number}")


def _parse_record(line: str, where: str) -> RecordedFrame:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc})") from exc
    received_at = record.get("received_at") if isinstance(record, dict) else None
    frame = record.get("frame") if isinstance(record, dict) else None
    if not _is_number(received_at) or not isinstance(frame, str):
        raise ValueError(f'{where}: expected {{"received_at": <number>, "frame": <text>}}')
    return RecordedFrame(float(received_at), frame)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _interval(rate: float) -> float | None:
    """Seconds per unit of ``rate`` (frames per second, or a speed factor); None = no wait."""
    return None if rate <= 0 or math.isinf(rate) else 1.0 / rate


class SimulatorServer:
    """A Galio-compatible feed on ``ws://host:port``. Use ``async with`` or start()/stop()."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self._generator = FrameGenerator(self.config.scenario)
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._clients: set[ServerConnection] = set()
        self._has_clients = asyncio.Event()
        self._started_at = 0.0
        self._frames_sent = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the port and start streaming."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        replay = self.config.replay
        if replay is not None and not replay.path.is_file():
            raise FileNotFoundError(f"no recording at {replay.path}")
        self._server = await serve(
            self._handle, self.config.host, self.config.port, ping_interval=self.config.ping_interval
        )
        self._started_at = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._stream(), name="simulator-stream")
        logger.info("simulator listening on %s", self.url)

    async def stop(self) -> None:
        """Stop streaming, close every connection (code 1001) and release the port. Idempotent."""
        task, server = self._task, self._server
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if server is not None:
            server.close()
            await server.wait_closed()
        logger.info("simulator stopped after %d frames", self._frames_sent)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    @property
    def clients(self) -> int:
        """Authenticated clients currently streamed to."""
        return len(self._clients)

    @property
    def frames_sent(self) -> int:
        """Stream frames (not broadcast() ones) that reached at least one client."""
        return self._frames_sent

    def elapsed(self) -> float:
        """Scenario time: seconds since start()."""
        return asyncio.get_running_loop().time() - self._started_at

    async def wait_finished(self) -> None:
        """Wait until the stream ends; raises what ended it if it failed."""
        if self._task is None:
            raise RuntimeError("the simulator is not started")
        await asyncio.shield(self._task)

    async def broadcast(self, message: str | bytes) -> int:
        """Send one frame (text for str, binary for bytes) to every authenticated client now;
        returns how many clients it reached."""
        return sum(await asyncio.gather(*(_send(ws, message) for ws in self._clients)))

    # connections

    async def _handle(self, ws: ServerConnection) -> None:
        if self.config.username is not None and not await self._authenticate(ws):
            logger.warning("auth failed for %s", ws.remote_address)
            await ws.close(AUTH_FAILED_CODE, AUTH_FAILED_REASON)
            return
        logger.info("client %s connected", ws.remote_address)
        self._clients.add(ws)
        self._has_clients.set()
        try:
            await _ignore_incoming(ws)
        finally:
            self._clients.discard(ws)
            if not self._clients:
                self._has_clients.clear()
            logger.info("client %s disconnected", ws.remote_address)

    async def _authenticate(self, ws: ServerConnection) -> bool:
        try:
            async with asyncio.timeout(self.config.auth_timeout):
                message = await ws.recv()
            sent = json.loads(message) if isinstance(message, str) else None
        except (TimeoutError, ConnectionClosed, json.JSONDecodeError, RecursionError):
            return False
        expected = {"username": self.config.username, "password": self.config.password}
        if not isinstance(sent, dict) or set(sent) != set(expected):
            return False
        return all(_same_text(sent[key], expected[key]) for key in expected)

    # the stream

    async def _stream(self) -> None:
        replay = self.config.replay
        if replay is None:
            await self._stream_scenario()
        else:
            await self._stream_replay(replay)
        logger.info("stream finished after %d frames", self._frames_sent)

    def _done(self) -> bool:
        limit = self.config.max_frames
        return limit is not None and self._frames_sent >= limit

    async def _publish(self, text: str) -> None:
        if await self.broadcast(text):
            self._frames_sent += 1

    async def _sleep_until(self, t: float) -> None:
        """Sleep until scenario time ``t``."""
        delay = t - self.elapsed()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _stream_scenario(self) -> None:
        hz = self.config.hz
        if _interval(hz) is None:
            await self._stream_fast()
            return
        tick = 0
        while not self._done():
            await self._sleep_until(tick / hz)
            await self._send_scenario(tick / hz)
            tick = max(tick + 1, int(self.elapsed() * hz))

    async def _stream_fast(self) -> None:
        while not self._done():
            await self._has_clients.wait()
            if not await self._send_scenario(self.elapsed()):
                await asyncio.sleep(PAUSE_POLL)
            await asyncio.sleep(0)

    async def _send_scenario(self, t: float) -> bool:
        """Send the frame at ``t`` if anyone listens; False during a pause."""
        if not self._clients:
            return True
        text = self._generator.text(t)
        if text is None:
            return False
        await self._publish(text)
        return True

    async def _stream_replay(self, replay: ReplayOptions) -> None:
        await self._has_clients.wait()
        while not self._done():
            if not await self._replay_once(replay):
                logger.warning("recording %s holds no frame", replay.path)
                return
            if not replay.loop:
                return

    async def _replay_once(self, replay: ReplayOptions) -> bool:
        """One pass over the recording; False when it holds no frame."""
        spacing = _interval(replay.speed)
        first: RecordedFrame | None = None
        origin = self.elapsed()
        for record in read_recording(replay.path):
            if self._done():
                break
            if first is None:
                first = record
            offset = 0.0 if spacing is None else max(0.0, record.received_at - first.received_at) * spacing
            await self._sleep_until(origin + offset)
            await asyncio.sleep(0)
            await self._publish(record.frame)
        return first is not None


def _same_text(sent: object, expected: str | None) -> bool:
    if not isinstance(sent, str) or expected is None:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


async def _send(ws: ServerConnection, message: str | bytes) -> bool:
    try:
        await ws.send(message)
    except ConnectionClosed:
        return False
    return True


async def _ignore_incoming(ws: ServerConnection) -> None:
    """Read and drop whatever the client sends until it goes away."""
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        return
