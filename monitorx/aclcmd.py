"""``monitorx acl``: the Redis ACL file of a locked-down deployment (``redis-server --aclfile``).

Promises:

- ``user default off`` with no rights: a client that does not authenticate can do nothing, not
  even PING.
- One user per service, named as its compose service (:data:`USERS`): ``ingestor``,
  ``dispatcher``, ``worker``, ``alerter``, ``web`` and ``operator`` (the ``monitorx`` commands a
  person runs: ``status``, ``alerts``, ``silence``, ``dlq``). Each may touch only the keys its
  process reads or writes (``shared/keys.py`` names the producer and consumer of every key),
  read-only (``%R~``) or write-only (``%W~``) where it only reads or only writes them; only the
  dispatcher and the workers touch RQ's keys and channels (``rq:*``; ``web`` and ``operator``
  read them, for the queue's figures). Every user reads the heartbeats (its healthcheck,
  ``monitorx health``, reads them all) and writes its own role's only.
- Commands: reads, writes, transactions, the connection commands and scripts (EVAL, EVALSHA,
  SCRIPT LOAD and EXISTS); never an admin or dangerous command (FLUSHALL, FLUSHDB, CONFIG, KEYS,
  DEBUG, ACL, SHUTDOWN, MONITOR...). The dispatcher and the workers also get what RQ needs:
  INFO (its server version check) and, for the workers, SUBSCRIBE to their command channel.
- Key patterns follow ``MONITORX_PREFIX`` (default ``mx:``), its glob characters escaped.
- Passwords come from the environment (or ``.env``): ``MONITORX_REDIS_PASSWORD_<SERVICE>``, one
  per user. The file holds only their SHA-256 (``#<hex>``), so it holds no secret, and no
  password is ever printed. A password missing, shorter than :data:`MIN_PASSWORD` or with a
  character outside ``[A-Za-z0-9._~-]`` (it goes into each service's ``redis://`` URL): the
  variable is named on standard error and the exit status is 2.

Output: standard output, or ``--output PATH`` (written whole, then renamed into place; mode 0644,
as the file holds no secret and Redis runs as another user).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.cli import EXIT_USAGE, settings_or_exit
from shared.keys import DEFAULT_PREFIX

MIN_PASSWORD = 16
"""Shortest password accepted (``openssl rand -hex 24`` makes 48 characters)."""
PASSWORD_CHARS = re.compile(r"^[A-Za-z0-9._~-]+$")
"""A password goes into a ``redis://user:password@host`` URL as is: URL-safe characters only."""
FILE_MODE = 0o644
"""Mode of ``--output``: Redis reads it as its own user; it holds hashes only."""

USERS = ("ingestor", "dispatcher", "worker", "alerter", "web", "operator")
"""One Redis user per service, in the order of the file."""


class AclSettings(BaseSettings):
    """The key prefix and one Redis password per service (no defaults: each is required)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^\S*$", validation_alias="MONITORX_PREFIX")
    ingestor: SecretStr = Field(min_length=MIN_PASSWORD, validation_alias="MONITORX_REDIS_PASSWORD_INGESTOR")
    dispatcher: SecretStr = Field(
        min_length=MIN_PASSWORD, validation_alias="MONITORX_REDIS_PASSWORD_DISPATCHER"
    )
    worker: SecretStr = Field(min_length=MIN_PASSWORD, validation_alias="MONITORX_REDIS_PASSWORD_WORKER")
    alerter: SecretStr = Field(min_length=MIN_PASSWORD, validation_alias="MONITORX_REDIS_PASSWORD_ALERTER")
    web: SecretStr = Field(min_length=MIN_PASSWORD, validation_alias="MONITORX_REDIS_PASSWORD_WEB")
    operator: SecretStr = Field(min_length=MIN_PASSWORD, validation_alias="MONITORX_REDIS_PASSWORD_OPERATOR")

    @field_validator(*USERS)
    @classmethod
    def _url_safe(cls, value: SecretStr) -> SecretStr:
        if not PASSWORD_CHARS.match(value.get_secret_value()):
            raise ValueError("only letters, digits and . _ ~ - (it goes into a redis:// URL)")
        return value

    def password(self, user: str) -> SecretStr:
        secret: SecretStr = getattr(self, user)
        return secret


@dataclass(frozen=True)
class Grant:
    """What one user may do. Key patterns are under the prefix; ``rq`` is ``none``, ``read``
    (RQ's keys read-only) or ``full`` (its keys and channels, and the commands RQ needs)."""

    rw: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    rq: Literal["none", "read", "full"] = "none"
    commands: tuple[str, ...] = ()


HEARTBEATS = "hb:*"
"""Read by every user: each service's healthcheck (``monitorx health``) reads every heartbeat."""
CANARY = "canary*"
"""The end-to-end canary's keys, read and written by the dispatcher, the workers and the alerter."""

GRANTS: dict[str, Grant] = {
    "ingestor": Grant(
        rw=("snapshots", "latest:*", "seen", "feed:*", "counters", "metrics", "hb:ingestor:*"),
        read=(HEARTBEATS,),
        write=("quarantine", "canary"),  # canary: deleted at start when the canary is off
    ),
    "dispatcher": Grant(
        rw=("snapshots", "queued:*", "hold:*", "slot:*", "counters", "metrics", "hb:dispatcher:*", CANARY),
        read=("latest:*", "seen", "state:*", HEARTBEATS),
        write=("alerts", "reload"),
        rq="full",
    ),
    "worker": Grant(
        rw=("state:*", "alerts", "queued:*", "counters", "metrics", "hb:worker:*", CANARY),
        read=("latest:*", "seen", HEARTBEATS),
        write=("hold:*", "reload"),
        rq="full",
        commands=("+subscribe", "+unsubscribe"),
    ),
    "alerter": Grant(
        rw=(
            *("alerts", "notify:*", "group:*", "groups", "firing", "inhibitors", "ref:*", "pace:*"),
            *("inflight:*", "sent:*", "attempts:*", "dead", "health", "counters", "metrics", "hb:alerter:*"),
            CANARY,
        ),
        read=("silences", "snapshots", HEARTBEATS),
        write=("sendlog",),
    ),
    "web": Grant(rw=("silences", "groups"), read=("*",), rq="read"),
    "operator": Grant(
        rw=("silences", "groups", "dead", "sent:*", "attempts:*"),
        read=("*",),
        write=("alerts",),
        rq="read",
    ),
}
"""Each user's rights, from what its process does (see the module docstring). A key a Lua script
declares (EVAL's KEYS) needs read and write, whatever the script does with it (EVAL's key spec is
read-write): the ingestor's ``seen`` (redisio.Publisher), the dispatcher's ``hold:*`` (its
latest-wins mark) and the workers' ``alerts`` (engine.store's compare-and-set)."""

BASE_COMMANDS = (
    "-@all",
    "+@read",
    "+@write",
    "+@transaction",
    "+@connection",
    "-@admin",
    "-@dangerous",
    *("+eval", "+evalsha", "+script|load", "+script|exists"),
    *("-flushall", "-flushdb", "-config", "-keys", "-debug", "-acl", "-shutdown", "-monitor"),
)
"""Every user's commands. Categories are expanded when the file is loaded (a command added to
one by a later Redis is granted by it); the explicit denials restate what must never pass."""
RQ_COMMANDS = ("+info",)
"""RQ reads the server's version with INFO (naming its connections, CLIENT SETNAME and INFO, is
in ``@connection``)."""


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis glob pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _keys(grant: Grant, prefix: str) -> list[str]:
    p = _glob_escape(prefix)
    keys = [f"~{p}{k}" for k in grant.rw] + [f"%R~{p}{k}" for k in grant.read]
    keys += [f"%W~{p}{k}" for k in grant.write]
    if grant.rq == "full":
        keys += ["~rq:*", "&rq:*"]
    elif grant.rq == "read":
        keys.append("%R~rq:*")
    return keys


def user_line(name: str, password: SecretStr, grant: Grant, prefix: str) -> str:
    """One ``user`` line: on, the password's SHA-256, its keys, channels and commands."""
    digest = hashlib.sha256(password.get_secret_value().encode()).hexdigest()
    commands = [*BASE_COMMANDS, *(RQ_COMMANDS if grant.rq == "full" else ()), *grant.commands]
    rules = ["on", f"#{digest}", "resetkeys", "resetchannels", *_keys(grant, prefix), *commands]
    return " ".join(["user", name, *rules])


def acl_file(settings: AclSettings) -> str:
    """The whole ACL file: the default user off, then one line per user of :data:`USERS`."""
    lines = ["user default off resetpass resetkeys resetchannels -@all"]
    lines += [user_line(u, settings.password(u), GRANTS[u], settings.prefix) for u in USERS]
    return "\n".join(lines) + "\n"


def write_file(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx acl",
        description="Print the Redis ACL file (redis-server --aclfile) of the services' users, from "
        "MONITORX_REDIS_PASSWORD_<INGESTOR|DISPATCHER|WORKER|ALERTER|WEB|OPERATOR> (hashed: the file "
        "holds no secret) and MONITORX_PREFIX.",
    )
    parser.add_argument("--output", type=Path, help="write the file here instead of standard output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_or_exit(AclSettings)
    text = acl_file(settings)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        write_file(args.output, text)
    except OSError as exc:
        sys.stderr.write(f"monitorx acl: cannot write {args.output}: {exc.strerror}\n")
        return EXIT_USAGE
    return 0
