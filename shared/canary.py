"""The dead-man's switch canary: a synthetic snapshot of a reserved account that travels the real
path every ``MONITORX_CANARY_SECONDS`` and makes the alerter ping ``MONITORX_DEADMAN_URL``.

The path, and what each layer promises:

1. the ingestor XADDs one entry to ``{p}snapshots`` every ``every`` seconds whatever its feed's
   state (it proves MonitorX, not Galio): fields ``account`` (:data:`CANARY_ACCOUNT`), ``seq``,
   ``observed_at`` (the send time), ``every`` and :data:`CANARY_FIELD` = ``1``
   (:meth:`CanaryTrip.entry_fields`). It writes no ``latest:*`` and no ``seen``: the canary is never
   an account. A feed account of that name is quarantined (``ingestor.frames``);
2. the dispatcher never routes such an entry to a check: it enqueues one canary job (args
   :meth:`CanaryTrip.job_args`, JSON only), latest wins like a pair's job, under the marker
   ``queued:{CANARY_INSTANCE}:{CANARY_ACCOUNT}``;
3. the job (``workers.jobs.run_canary``) XADDs to ``{p}alerts`` one entry whose only field is
   :data:`CANARY_FIELD` (the trip as JSON, with the worker's name and the job's start);
4. the alerter's router never routes it to a receiver (no group, no ``firing``), acknowledges it,
   records the arrival in ``{p}canary`` (:meth:`CanaryTrip.hash_fields`) and hands it to the
   dead-man's switch pinger (``alerter.deadman``), which pings unless the trip is :attr:`stale`.

Times are unix seconds of the clock of the process that took them (the round trip compares the
ingestor's clock with the alerter's: keep hosts in NTP sync).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CANARY_ACCOUNT = "monitorx-canary"
"""The reserved account name of the canary: never accepted from a feed, never an account."""
CANARY_INSTANCE = "canary"
"""The pseudo-instance of the canary's latest-wins marker ``queued:canary:monitorx-canary`` (no
configured check can hold that pair: its account is reserved)."""
CANARY_FIELD = "canary"
"""The stream field that marks a canary entry, on the snapshots and the alerts stream."""
CANARY_EVERY = 30.0
"""Default seconds between two canaries (``MONITORX_CANARY_SECONDS``; 0 turns the canary off).
The dead-man's switch service should expect a ping every ``every`` seconds with a grace of
``2 × every``."""
STALE_AFTER = 2.0
"""A trip whose round trip took longer than this many periods is stale: recorded, never pinged."""


class CanaryTrip(BaseModel):
    """One canary, filled in as it travels: ``seq`` and ``sent_at`` (ingestor), ``every`` (the
    sender's period), ``worker`` and ``job_started_at`` (worker), ``arrived_at`` (alerter)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    seq: int
    sent_at: float
    every: float = Field(gt=0)
    worker: str | None = None
    job_started_at: float | None = None
    arrived_at: float | None = None

    @property
    def round_trip_s(self) -> float | None:
        """Seconds from sending to arrival (None before arrival)."""
        return None if self.arrived_at is None else round(self.arrived_at - self.sent_at, 6)

    @property
    def stale(self) -> bool:
        """Arrived more than ``STALE_AFTER × every`` after it was sent (a backlog drained late)."""
        trip = self.round_trip_s
        return trip is not None and trip > STALE_AFTER * self.every

    def entry_fields(self) -> dict[str, str]:
        """The fields of its entry on the snapshots stream."""
        return {
            "account": CANARY_ACCOUNT,
            "seq": str(self.seq),
            "observed_at": repr(self.sent_at),
            "every": repr(self.every),
            CANARY_FIELD: "1",
        }

    @classmethod
    def from_entry(cls, fields: Mapping[str, str]) -> CanaryTrip | None:
        """The trip of a snapshots-stream entry; None when it is no canary or unreadable."""
        if CANARY_FIELD not in fields:
            return None
        return _valid(
            {"seq": fields.get("seq"), "sent_at": fields.get("observed_at"), "every": fields.get("every")}
        )

    def job_args(self) -> list[Any]:
        """The canary job's arguments ``[seq, sent_at, every]`` (JSON)."""
        return [self.seq, self.sent_at, self.every]

    def alert_fields(self) -> dict[str, str]:
        """The one field of its entry on the alerts stream."""
        return {CANARY_FIELD: self.model_dump_json(exclude_none=True)}

    @classmethod
    def from_alert_entry(cls, fields: Mapping[str, str]) -> CanaryTrip | None:
        """The trip of an alerts-stream entry; None when it is no canary or unreadable."""
        if CANARY_FIELD not in fields:
            return None
        try:
            return cls.model_validate_json(fields[CANARY_FIELD])
        except ValidationError:
            return None

    def hash_fields(self) -> dict[str, str]:
        """The fields of ``{p}canary`` (the last arrival): every member set, and ``round_trip_s``."""
        found = {k: v for k, v in self.model_dump().items() if v is not None}
        found["round_trip_s"] = self.round_trip_s
        return {k: v if isinstance(v, str) else repr(v) for k, v in found.items() if v is not None}

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> CanaryTrip | None:
        """The trip recorded by :meth:`hash_fields`; None when absent or unreadable."""
        return _valid(dict(fields)) if fields else None


def _valid(data: Mapping[str, Any]) -> CanaryTrip | None:
    try:
        return CanaryTrip.model_validate(data)
    except ValidationError:
        return None
