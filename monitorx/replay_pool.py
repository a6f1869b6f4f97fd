"""A replay whose screening runs in several processes: the recording is cut into ``jobs``
stretches at line boundaries, a process screens each stretch (``replay.Screener``: decoding and
screens, the bulk of the work, free of alert state) and sends back its :class:`replay.Scan`
records as JSON; this process applies them in recording order (``replay.Replay.apply``), reading
a frame again only when a pair needs its snapshot. The result is the one a single process gives.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import queue
import signal
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from monitorx.replay import Item, Options, Replay, Scan, Screener, Stats, frame_at, records_at
from shared.config import Config
from workers.plan import Plan, build
from workers.registry import Registry

log = logging.getLogger(__name__)

BATCH = 2_000
"""Scans per message from a screening process."""
POLL_SECONDS = 0.1
FRAMES_KEPT = 8
"""Frames read again that the ordered phase keeps decoded (a tick reads the newest few)."""


class ShareFailed(RuntimeError):
    """A screening process raised or died."""


def stretches(path: Path, jobs: int) -> list[tuple[int, int]]:
    """``jobs`` byte ranges ``[start, end)`` covering the file, each starting at a line."""
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as f:
        for k in range(1, jobs):
            f.seek(max(size * k // jobs - 1, cuts[-1]))
            f.readline()  # to the start of the next line
            cuts.append(max(min(f.tell(), size), cuts[-1]))
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a] or [(0, size)]


def screen_main(config: str, recording: Path, options: Options, span: tuple[int, int], out: Any) -> None:
    """A screening process: ``("scans", json)`` batches, then ``("done", stats)`` (or
    ``("error", text)``). ``config``: the parent's configuration as JSON, so that both bind
    the same instances whatever happens to the file meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends the pool
    try:
        screener = Screener(build(Config.model_validate_json(config), Registry.discover()), options)
        batch: list[tuple[Any, ...]] = []
        for scan, _ in screener.scan(records_at(recording, screener.stats, *span)):
            batch.append(tuple(scan))
            if len(batch) >= BATCH:
                out.put(("scans", orjson.dumps(batch)))
                batch = []
        out.put(("scans", orjson.dumps(batch)))
        out.put(("done", asdict(screener.stats)))
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
        out.put(("error", traceback.format_exc()))


class Frames:
    """Frames read again by byte offset, the newest few kept decoded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = 0
        self._kept: dict[int, dict[str, Any]] = {}

    def __call__(self, offset: int) -> dict[str, Any]:
        pos = self._kept.get(offset)
        if pos is None:
            self.reads += 1
            if len(self._kept) >= FRAMES_KEPT:
                del self._kept[next(iter(self._kept))]
            pos = self._kept[offset] = frame_at(self.path, offset)
        return pos


class ReplayPool:
    """Screens a recording in ``jobs`` processes; :meth:`items` yields the replay's items."""

    def __init__(
        self,
        plan: Plan,
        recording: Path,
        options: Options,
        jobs: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        ctx = mp.get_context("spawn")
        self._progress = progress
        self.frames = Frames(recording)
        self.replay = Replay(plan, options, fetch=self.frames)
        spans = stretches(recording, jobs)
        self._queues = [ctx.Queue() for _ in spans]
        self._stats: list[Stats | None] = [None] * len(spans)
        self._procs: list[SpawnProcess] = [
            ctx.Process(
                target=screen_main,
                args=(plan.config.model_dump_json(), recording, options, span, q),
                name=f"backtest-screen-{i}",
                daemon=True,
            )
            for i, (span, q) in enumerate(zip(spans, self._queues, strict=True))
        ]

    def __enter__(self) -> ReplayPool:
        for proc in self._procs:
            proc.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)

    def items(self) -> Iterator[Item]:
        return self.replay.apply((scan, None) for i in range(len(self._procs)) for scan in self._scans(i))

    def stats(self) -> Stats:
        done = [s for s in self._stats if s is not None]
        if len(done) != len(self._stats):
            raise ShareFailed("a screening process has not finished")
        return Stats.merged(self.replay.stats, done)

    def _scans(self, index: int) -> Iterator[Scan]:
        for batch in self._messages(index):
            for row in orjson.loads(batch):
                yield Scan(*row)  # accounts as lists: unpacked as the tuples are
            if self._progress is not None:
                self._progress(self.replay.offset)

    def _messages(self, index: int) -> Iterator[bytes]:
        q, proc = self._queues[index], self._procs[index]
        while True:
            try:
                kind, payload = q.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not proc.is_alive() and q.empty():
                    raise ShareFailed(f"{proc.name} died (exit code {proc.exitcode})") from None
                continue
            if kind == "scans":
                yield payload
            elif kind == "done":
                self._stats[index] = Stats(**payload)
                return
            else:
                raise ShareFailed(f"{proc.name} failed:\n{payload}")
