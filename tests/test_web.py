"""``monitorx web`` on a real Redis and a real socket: the server runs in a thread on a free port
and is asked over HTTP (urllib); the state is written by shared.heartbeat.Beater,
shared.redisio.Publisher and the documented key layouts."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis as redis_lib
from prometheus_client.parser import text_string_to_metric_families

from engine.plan import builtin_config
from monitorx.status import Status
from monitorx.web import WebServer, reader
from shared.heartbeat import Beater, Role
from shared.keys import Keys
from shared.models import Alert, Snapshot
from shared.redisio import Publisher, connect
from shared.silences import SilenceStore
from tests.helpers import free_port
from tests.test_delivery_stages import alert as stage_alert

KEYS = Keys()
CONFIG = builtin_config()  # stale_after 10 s


def serve(url: str) -> Iterator[str]:
    """A started server reading the Redis at ``url``; yields its base URL, then stops it."""
    r = connect(url)
    server = WebServer(("127.0.0.1", free_port()), reader(r, KEYS, CONFIG))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        r.close()


@pytest.fixture
def web(redis_url: str) -> Iterator[str]:
    yield from serve(redis_url)


def get(url: str) -> tuple[int, str, str]:
    """Status code, Content-Type and body of a GET (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def beat(r: redis_lib.Redis, role: Role, name: str) -> None:
    Beater(r, KEYS, role, name).beat()


def alert(account: str, title: str, check: str = "delta") -> Alert:
    return stage_alert(account, check, at=time.time()).model_copy(update={"title": title})


def fire(r: redis_lib.Redis, *alerts: Alert) -> None:
    """What the alerter's router records (alerter.router._record_firing): fingerprint -> alert."""
    r.hset(KEYS.firing, mapping={a.fingerprint: a.model_dump_json() for a in alerts})


def test_metrics_show_processes_feeds_account_age_counters_and_alerts(r: redis_lib.Redis, web: str) -> None:
    beat(r, "worker", "w1")
    beat(r, "worker", "w2")
    beat(r, "ingestor", "i1")
    now = time.time()
    Publisher(r, KEYS).publish(
        [Snapshot(account="BIN-A", venue="binance", observed_at=now - 30, raw={"totalMarginBalance": "1"})]
    )
    r.hset(KEYS.feed("galio"), mapping={"state": "up", "reason": "", "since": "5.0", "updated_at": "6.0"})
    r.hset(
        KEYS.feed("other"), mapping={"state": "down", "reason": "refused", "since": "5.0", "updated_at": "6"}
    )
    r.hset(KEYS.counters, mapping={"frames": 7, "jobs_enqueued": 2})
    fire(r, alert("BIN-B", "b"), alert("BIN-C", "c"))
    SilenceStore(r, KEYS).add(['account="BIN-C"'], 600, "maintenance", "ops", time.time(), 3600)
    code, content_type, body = get(f"{web}/metrics")
    assert code == 200 and content_type.startswith("text/plain")
    found = samples(body)
    assert found[("monitorx_processes_up", (("role", "worker"),))] == 2
    assert found[("monitorx_processes_up", (("role", "ingestor"),))] == 1
    assert found[("monitorx_processes_up", (("role", "alerter"),))] == 0
    assert found[("monitorx_feed_up", (("feed", "galio"),))] == 1
    assert found[("monitorx_feed_up", (("feed", "other"),))] == 0
    assert 29 < found[("monitorx_account_data_age_seconds", (("account", "BIN-A"),))] < 40
    assert found[("monitorx_frames_total", ())] == 7 and found[("monitorx_jobs_enqueued_total", ())] == 2
    assert found[("monitorx_check_errors_total", ())] == 0
    assert found[("monitorx_alerts_firing", (("mark", "notified"),))] == 1
    assert found[("monitorx_alerts_firing", (("mark", "silenced"),))] == 1
    assert (found[("monitorx_healthy", ())], found[("monitorx_dead_letters", ())]) == (0, 0)
    assert found[("monitorx_problems", ())] >= 3  # no dispatcher, no alerter, feed down, stale account
    assert found[("monitorx_queue_jobs", (("queue", "monitorx"), ("state", "waiting")))] == 0


def test_metrics_follow_redis_on_each_scrape(r: redis_lib.Redis, web: str) -> None:
    assert samples(get(f"{web}/metrics")[2])[("monitorx_processes_up", (("role", "worker"),))] == 0
    beat(r, "worker", "w1")
    r.xadd(KEYS.dead, {"alert": "{}", "sink": "desk"})
    found = samples(get(f"{web}/metrics")[2])
    assert found[("monitorx_processes_up", (("role", "worker"),))] == 1
    assert found[("monitorx_dead_letters", ())] == 1


def test_api_status_is_the_model_with_its_problems(r: redis_lib.Redis, web: str) -> None:
    for role in ("ingestor", "dispatcher", "alerter"):
        beat(r, role, f"{role}-1")
    code, content_type, body = get(f"{web}/api/status")
    assert code == 200 and content_type == "application/json"
    data = json.loads(body)
    assert data["healthy"] is False
    assert data["problems"] == ["no worker running (no fresh heartbeat)"]
    status = Status.model_validate({k: v for k, v in data.items() if k not in ("problems", "healthy")})
    assert {p.heartbeat.role for p in status.processes} == {"ingestor", "dispatcher", "alerter"}


def test_the_page_shows_problems_alerts_and_mute_reasons_escaped(r: redis_lib.Redis, web: str) -> None:
    beat(r, "worker", "w1")
    fire(r, alert("BIN-HTML", "<script>alert(1)</script>"), alert("BIN-MUTED", "quiet"))
    SilenceStore(r, KEYS).add(['account="BIN-MUTED"'], 600, "maintenance", "ops", time.time(), 3600)
    code, content_type, body = get(f"{web}/")
    assert code == 200 and content_type.startswith("text/html")
    assert '<meta http-equiv="refresh" content="10">' in body and "<script" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "BIN-HTML" in body and "notified" in body
    assert "silenced by" in body and "(maintenance)" in body
    assert body.index("no ingestor running") < body.index("Processes") < body.index("w1")


def test_anything_else_is_404(web: str) -> None:
    assert get(f"{web}/nope")[0] == 404
    assert get(f"{web}/api/status/x")[0] == 404


def test_redis_down_answers_503_without_the_password() -> None:
    url = f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0"
    for base in serve(url):
        for path in ("/", "/api/status", "/metrics"):
            code, _, body = get(f"{base}{path}")
            assert code == 503 and "Redis unavailable" in body and "s3cret" not in body
