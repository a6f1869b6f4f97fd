"""Process plumbing: logging set-up (text or JSON, secrets redacted) and SIGTERM/SIGINT stopping."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
from types import FrameType

_SECRET_URL = re.compile(
    r"(https?://hooks\.slack\.com/\S+|https?://[^\s/]*:[^\s@/]*@\S+|/services/[A-Z0-9/]+\S*)"
)
REDACTED = "<redacted>"


def redact(text: str) -> str:
    """Remove webhook URLs and credentials embedded in URLs from a log line."""
    return _SECRET_URL.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites every record's message with :func:`redact` (slack-sdk logs webhook URLs at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once, from a process's ``main()``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Stopper(threading.Event):
    """A stop flag set by SIGTERM/SIGINT: loops run ``while not stopper.is_set(): step()``.

    The current step always finishes; a second signal is not special (the step is short)."""

    def install(self) -> Stopper:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info(
            "received %s, finishing the current step", signal.Signals(signum).name
        )
        self.set()
