"""A replay whose screening runs in several processes (the backtest's fast path): the recording
is cut into stretches at line boundaries, dealt in turn to ``jobs`` processes; a process screens
each of its stretches (``replay.Screener``: decoding and evaluating, the bulk of the work, free of
alert state) and sends back the :class:`replay.Scan` records as JSON; this process applies them
in recording order (``replay.Replay.apply``), reading a frame again only when a pair needs its
snapshot. The result is the one a single process gives.
"""

from __future__ import annotations

import itertools
import json
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

from engine.plan import Plan, build
from engine.registry import Registry
from monitorx.replay import (
    Fired,
    Options,
    Replay,
    Scan,
    Screener,
    Stats,
    decode,
    frame_at,
    records_at,
)
from shared.config import Config

log = logging.getLogger(__name__)

BATCH = 2_000
"""Scans per message from a screening process."""
STRETCHES_PER_JOB = 8
"""Stretches per screening process, dealt in turn: the ordered phase takes them in order, so
small stretches keep every process busy to the end (with one stretch each, the last one's
scans would be applied alone after the others had finished)."""
QUEUED_BATCHES = 64
"""Batches a screening process may have waiting before it pauses: more than a stretch of a day's
recording (so it works on its next stretch while this process applies another's), and a bound
on the memory they hold (a few MB, tens when every pair breaches)."""
POLL_SECONDS = 0.1
FRAMES_KEPT = 8
"""Frames read again that the ordered phase keeps decoded (a tick reads the newest few)."""


class ShareFailed(RuntimeError):
    """A screening process raised or died."""


def stretches(path: Path, count: int) -> list[tuple[int, int]]:
    """At most ``count`` byte ranges ``[start, end)`` covering the file, each starting at a line."""
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as f:
        for k in range(1, count):
            f.seek(max(size * k // count - 1, cuts[-1]))
            f.readline()  # to the start of the next line
            cuts.append(max(min(f.tell(), size), cuts[-1]))
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a] or [(0, size)]


def screen_main(
    config: str, recording: Path, options: Options, spans: list[tuple[int, int]], out: Any
) -> None:
    """A screening process: for each stretch in turn, ``("scans", json)`` batches (see
    :func:`encode`) then ``("done", stats)``; ``("error", text)`` if it fails. ``config``: the
    parent's configuration as JSON, so that both bind the same instances whatever happens to the
    file meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends the pool
    try:
        plan = build(Config.model_validate_json(config), Registry.discover())
        for span in spans:
            screener = Screener(plan, options, evaluate=True)
            batch: list[Scan] = []
            for scan, _ in screener.scan(records_at(recording, screener.stats, *span)):
                batch.append(scan)
                if len(batch) >= BATCH:
                    out.put(("scans", encode(batch)))
                    batch = []
            out.put(("scans", encode(batch)))
            out.put(("done", asdict(screener.stats)))
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
        out.put(("error", traceback.format_exc()))


def encode(scans: list[Scan]) -> bytes:
    """A batch of scans as JSON: one ``[t, offset, size, [[rank, account, mask], ...]]`` each."""
    try:
        return orjson.dumps(scans)
    except orjson.JSONEncodeError:  # a lone surrogate in an account name: json escapes it
        return json.dumps(scans).encode()


def decode_scans(data: bytes) -> Iterator[Scan]:
    """The scans of one :func:`encode` batch."""
    for t, offset, size, accounts in decode(data):
        yield Scan(t, offset, size, [(rank, account, mask) for rank, account, mask in accounts])


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
        spans = stretches(recording, jobs * STRETCHES_PER_JOB) if jobs > 1 else stretches(recording, 1)
        jobs = min(jobs, len(spans))
        self._queues = [ctx.Queue(maxsize=QUEUED_BATCHES) for _ in range(jobs)]
        self._stats: list[Stats | None] = [None] * len(spans)
        self._procs: list[SpawnProcess] = [
            ctx.Process(
                target=screen_main,
                args=(plan.config.model_dump_json(), recording, options, spans[i::jobs], q),
                name=f"backtest-screen-{i}",
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

    def items(self) -> Iterator[Fired]:
        return self.replay.apply((scan, None) for k in range(len(self._stats)) for scan in self._scans(k))

    def stats(self) -> Stats:
        done = [s for s in self._stats if s is not None]
        if len(done) != len(self._stats):
            raise ShareFailed("a screening process has not finished")
        return Stats.merged(self.replay.stats, done)

    def _scans(self, stretch: int) -> Iterator[Scan]:
        """The scans of one stretch, from the process it was dealt to (stretch mod jobs)."""
        for batch in self._messages(stretch):
            yield from decode_scans(batch)
            if self._progress is not None:
                self._progress(self.replay.offset)

    def _messages(self, stretch: int) -> Iterator[bytes]:
        q, proc = self._queues[stretch % len(self._queues)], self._procs[stretch % len(self._procs)]
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
                self._stats[stretch] = Stats(**payload)
                return
            else:
                raise ShareFailed(f"{proc.name} failed:\n{payload}")
