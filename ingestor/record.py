"""Recording of raw frames, exactly as they arrived, for replay and post-mortems."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


class Recorder:
    """Appends ``{"received_at": <unix seconds>, "frame": "<text as received>"}`` lines to a file,
    flushed per line, closed on leaving the ``with`` block. A write error is logged once and stops
    recording; ingestion goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._failed = False

    def write(self, text: str, received_at: float) -> None:
        if self._failed:
            return
        try:
            self._file.write(json.dumps({"received_at": received_at, "frame": text}) + "\n")
            self._file.flush()
        except OSError as exc:
            self._failed = True
            log.error("recording to %s failed, recording stopped: %s", self.path, exc)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.close()
