"""A replay shared by several processes: each one reads every frame but normalizes and evaluates
only its share of the accounts (state is per (instance, account), so shares never interact).
Their items merge by :class:`monitorx.replay.Order` into the order one process would give;
reports are built in this process from every share's :class:`ReportPart` (``replay.collect``).
"""

from __future__ import annotations

import heapq
import logging
import multiprocessing as mp
import queue
import signal
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import TracebackType
from typing import Any

from monitorx.replay import Item, Mark, Options, Replay, Stats, read_recording
from workers.plan import load_plan

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
"""A share sends what it has (at least a watermark) this often."""
FLUSH_ITEMS = 512
POLL_SECONDS = 0.1


class ShareFailed(RuntimeError):
    """A share process raised or died."""


@dataclass(frozen=True)
class Share:
    """Owns the accounts whose CRC-32 falls in share ``index`` of ``count``."""

    index: int
    count: int

    def __call__(self, account: str) -> bool:
        return zlib.crc32(account.encode()) % self.count == self.index


def _send_items(replay: Replay, recording: Path, out: Any, progress: Any) -> None:
    """Batches of items; consecutive watermarks collapse into the newest."""
    batch: list[Item] = []
    deadline = time.monotonic() + FLUSH_SECONDS
    for item in replay.run(read_recording(recording, replay.stats)):
        if not isinstance(item, Mark) or not batch or not isinstance(batch[-1], Mark):
            batch.append(item)
        else:
            batch[-1] = item
        if len(batch) >= FLUSH_ITEMS or time.monotonic() >= deadline:
            out.put(("items", batch))
            batch, deadline = [], time.monotonic() + FLUSH_SECONDS
            if progress is not None:
                progress.value = replay.stats.bytes_read
    out.put(("items", batch))


def share_main(
    config: Path | None, recording: Path, options: Options, share: Share, out: Any, progress: Any
) -> None:
    """A share process: replay, sending ``("items", [...])`` batches, then ``("done", Stats)``
    (or ``("error", text)``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends the shares
    try:
        replay = Replay(load_plan(config), options, owns=share)
        _send_items(replay, recording, out, progress)
        out.put(("done", replay.stats))
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
        out.put(("error", traceback.format_exc()))


class ReplayPool:
    """Runs ``jobs`` share processes; :meth:`items` yields their merged items."""

    def __init__(
        self,
        config: Path | None,
        recording: Path,
        options: Options,
        jobs: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        ctx = mp.get_context("spawn")
        self._progress = progress
        self._bytes = ctx.Value("q", 0)
        self._queues = [ctx.Queue() for _ in range(jobs)]
        self._stats: list[Stats | None] = [None] * jobs
        self._procs: list[SpawnProcess] = [
            ctx.Process(
                target=share_main,
                args=(config, recording, options, Share(i, jobs), q, self._bytes if i == 0 else None),
                name=f"backtest-share-{i}",
                daemon=True,
            )
            for i, q in enumerate(self._queues)
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
        streams = [self._stream(i) for i in range(len(self._procs))]
        return heapq.merge(*streams, key=lambda item: item.order)

    def stats(self) -> Stats:
        done = [s for s in self._stats if s is not None]
        if len(done) != len(self._stats):
            raise ShareFailed("a share has not finished")
        return Stats.merged(done)

    def _show_progress(self) -> None:
        if self._progress is not None:
            self._progress(int(self._bytes.value))

    def _stream(self, index: int) -> Iterator[Item]:
        q, proc = self._queues[index], self._procs[index]
        while True:
            try:
                kind, payload = q.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self._show_progress()
                if not proc.is_alive() and q.empty():
                    raise ShareFailed(f"{proc.name} died (exit code {proc.exitcode})") from None
                continue
            self._show_progress()
            if kind == "items":
                yield from payload
            elif kind == "done":
                self._stats[index] = payload
                return
            else:
                raise ShareFailed(f"{proc.name} failed:\n{payload}")
