"""``monitorx web`` on a real Redis and a real socket: the server runs in a thread on a free port
and is asked over HTTP (urllib; http.client for the POSTs, to see their 303 as sent); the state is
written by shared.heartbeat.Beater, shared.redisio.Publisher, shared.silences.SilenceStore and the
documented key layouts. A refused write is proven by every key and value in Redis being unchanged."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis as redis_lib
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from engine.plan import builtin_config
from monitorx.status import Status
from monitorx.web import MAX_BODY, Operator, WebServer, reader
from shared.heartbeat import Beater, Role
from shared.keys import Keys
from shared.models import Alert, Snapshot
from shared.redisio import Publisher, connect
from shared.settings import WebSettings
from shared.silences import SilenceStore
from tests.helpers import free_port
from tests.pipeline import redis_contents
from tests.test_delivery_stages import alert as stage_alert

KEYS = Keys()
CONFIG = builtin_config()  # stale_after 10 s
TOKEN = "op-token-7f3a9c1e5b"
MAX_DURATION = 24 * 3600.0


def serve(url: str, token: str | None = None) -> Iterator[str]:
    """A started server reading the Redis at ``url`` (writable with ``token``, read-only without);
    yields its base URL, then stops it."""
    r = connect(url)
    operator = Operator(None if token is None else SecretStr(token), SilenceStore(r, KEYS), MAX_DURATION)
    server = WebServer(("127.0.0.1", free_port()), reader(r, KEYS, CONFIG), operator)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
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
    """Read-only: no operator token configured."""
    yield from serve(redis_url)


@pytest.fixture
def ops(redis_url: str) -> Iterator[str]:
    """Writable with TOKEN."""
    yield from serve(redis_url, TOKEN)


def get(url: str) -> tuple[int, str, str]:
    """Status code, Content-Type and body of a GET (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def post(
    base: str, path: str, fields: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """Status code, headers and body of a form POST, redirects not followed."""
    body = urlencode(dict(fields or {})).encode()
    sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    return raw_post(base, path, body, sent)


def raw_post(
    base: str, path: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(urlsplit(base).netloc, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=dict(headers))
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def redis_state(redis_url: str) -> list[tuple[bytes, bytes]]:
    """Every key and value in Redis, sorted: equal before and after means nothing was written."""
    return sorted(redis_contents(redis_url))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def beat(r: redis_lib.Redis, role: Role, name: str) -> None:
    """A fresh heartbeat; an ingestor's says its feed ``galio`` is up."""
    feeds = {"galio": {"state": "up"}}
    Beater(r, KEYS, role, name).beat({"feeds": feeds} if role == "ingestor" else {})


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
    assert '<meta http-equiv="refresh" content="10; url=/">' in body and "<script" not in body
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


# -- the page's figures, processes and dead letters ------------------------------------------------


def cells(body: str, title: str) -> list[list[str]]:
    """The rows of the page's table titled ``title``, each its cells' HTML as sent."""
    table = body.split(f"<h2>{title}</h2>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in table.split("<tr")[2:]]


def test_the_page_shows_each_accounts_venue_data_age_totals_and_open_positions(
    r: redis_lib.Redis, web: str
) -> None:
    now = time.time()
    raw = {
        "maintotalWalletBalance": "12345.678",
        "maintotalMarginBalance": 12000.5,
        "maintotalUnrealizedProfit": "-345.2",
        "BTCUSDT": "0.5",
        "ETHUSDT": "-2",
        "SOLUSDT": "0",
    }
    Publisher(r, KEYS).publish(
        [
            Snapshot(account="BIN-FIG", venue="binance", observed_at=now - 3, raw=raw),
            Snapshot(
                account="OKX-OLD", venue="okx", observed_at=now - 300, raw={"maintotalWalletBalance": "7"}
            ),
        ]
    )
    body = get(f"{web}/")[2]
    rows = {row[0]: row for row in cells(body, "Accounts")}
    assert rows["BIN-FIG"][1] == "binance" and rows["BIN-FIG"][2] in ("3s", "4s")
    assert rows["BIN-FIG"][3:] == ["12,345.68", "12,000.50", "-345.20", "", "2"]  # SOLUSDT is flat
    assert rows["OKX-OLD"][1] == "okx" and rows["OKX-OLD"][3] == "7.00"
    assert rows["OKX-OLD"][2] in ("5m 00s STALE", "5m 01s STALE")
    assert body.index("OKX-OLD") < body.index("BIN-FIG")  # oldest data first
    assert '<tr class="bad"><td>OKX-OLD' in body and "<tr><td>BIN-FIG" in body
    (figures,) = [a for a in json.loads(get(f"{web}/api/status")[2])["accounts"] if a["account"] == "BIN-FIG"]
    assert figures["venue"] == "binance" and figures["positions"] == 2
    assert figures["figures"]["totalWalletBalance"] == pytest.approx(12345.678)


def test_the_page_shows_each_process_with_its_roles_heartbeat_details(r: redis_lib.Redis, web: str) -> None:
    now = time.time()
    feeds = {"galio": {"state": "up", "last_frame_at": now - 1}}
    Beater(r, KEYS, "ingestor", "ing-1").beat({"feeds": feeds})
    Beater(r, KEYS, "dispatcher", "disp-1").beat({"read_lag_s": 0.25, "newest_observed_at": now - 2})
    Beater(r, KEYS, "worker", "w-busy").beat({"current_job": "delta-BIN-A-7"})
    Beater(r, KEYS, "worker", "w-idle").beat({"current_job": None})
    Beater(r, KEYS, "alerter", "al-1").beat({"receivers": ["desk", "ops"], "backlog": {"desk": 0, "ops": 3}})
    body = get(f"{web}/")[2]
    rows = {row[1]: row for row in cells(body, "Processes")}
    assert rows["ing-1"][-1] == "feed galio up, last frame 1s ago"
    assert rows["disp-1"][-1] == "read lag 0.25 s, newest data 2s old"
    assert (rows["w-busy"][-1], rows["w-idle"][-1]) == ("running job delta-BIN-A-7", "idle")
    assert rows["al-1"][-1] == "backlog: desk 0, ops 3"
    assert rows["w-busy"][3] == str(os.getpid()) and rows["w-busy"][2] == socket.gethostname()
    assert '<h1>MonitorX: <span class="ok">healthy</span></h1>' in body


def test_the_page_shows_dead_letters_newest_first_escaped(r: redis_lib.Redis, web: str) -> None:
    old = alert("BIN-OLD", "older failure")
    bad = alert("BIN-DL", "<b>bold</b> title")
    r.xadd(KEYS.dead, {"alert": old.model_dump_json(), "sink": "desk", "error": "410", "failed_at": "1"})
    r.xadd(KEYS.dead, {"alert": bad.model_dump_json(), "sink": "ops", "error": "403 <forbidden>"})
    r.xadd(KEYS.dead, {"alert": "not json", "sink": "*", "error": "unreadable"})
    body = get(f"{web}/")[2]
    assert (
        "<b>bold" not in body and "&lt;b&gt;bold&lt;/b&gt; title" in body and "403 &lt;forbidden&gt;" in body
    )
    rows = cells(body, "Dead letters: 3 waiting (newest 3; all: monitorx dlq list)")
    assert [row[1:4] for row in rows] == [
        ["*", "?", "(unreadable alert)"],
        ["ops", "BIN-DL", "&lt;b&gt;bold&lt;/b&gt; title"],
        ["desk", "BIN-OLD", "older failure"],
    ]
    assert rows[2][0] == "1970-01-01 00:00:01"  # the alerter's failed_at
    assert body.index("3 dead letter(s) waiting") < body.index("<h2>Processes")  # problems first
    newest = json.loads(get(f"{web}/api/status")[2])["dead_newest"]
    assert [(d["receiver"], d["account"]) for d in newest] == [
        ("*", ""),
        ("ops", "BIN-DL"),
        ("desk", "BIN-OLD"),
    ]


# -- silences: the writes -------------------------------------------------------------------------


def added_id(headers: Mapping[str, str]) -> str:
    location = headers["Location"]
    assert location.startswith("/silences?")
    query = parse_qs(urlsplit(location).query)
    assert query["done"] == ["added"]
    return query["id"][0]


def add_form(**fields: str) -> dict[str, str]:
    form = {"matchers": 'account=BIN-X\ncheck=~"delta|hedge"', "duration": "90m", "reason": "deploy"}
    return {**form, "by": "alice", "token": TOKEN, **fields}


def test_an_operator_adds_a_silence_which_the_store_and_the_pages_show(r: redis_lib.Redis, ops: str) -> None:
    before = time.time()
    code, headers, _ = post(ops, "/silences", add_form())
    assert code == 303
    silence_id = added_id(headers)
    (stored,) = SilenceStore(r, KEYS).list(time.time())
    assert stored.id == silence_id and stored.matchers == ('account="BIN-X"', 'check=~"delta|hedge"')
    assert (stored.reason, stored.by) == ("deploy", "alice")
    assert before + 90 * 60 <= stored.ends_at <= time.time() + 90 * 60
    page = get(f"{ops}{headers['Location']}")[2]
    assert f"Silence {silence_id} added." in page and "check=~&quot;delta|hedge&quot;" in page
    assert f'action="/silences/{silence_id}/expire"' in page
    live = get(f"{ops}/")[2]
    assert silence_id in live and 'href="/silences"' in live and "<form" not in live


def test_the_token_is_also_taken_as_a_bearer_authorization(r: redis_lib.Redis, ops: str) -> None:
    form = {k: v for k, v in add_form().items() if k != "token"}
    code, headers, _ = post(ops, "/silences", form, {"Authorization": f"Bearer {TOKEN}"})
    assert code == 303 and SilenceStore(r, KEYS).get(added_id(headers)) is not None


def test_an_operator_expires_a_silence_and_the_alerters_groups_are_due_at_once(
    r: redis_lib.Redis, ops: str
) -> None:
    store = SilenceStore(r, KEYS)
    silence = store.add(["account=BIN-X"], 3600, "maintenance", "ops", time.time(), MAX_DURATION)
    r.zadd(KEYS.groups, {"group-later": time.time() + 600})
    code, headers, _ = post(ops, f"/silences/{silence.id}/expire", {"token": TOKEN})
    assert code == 303 and headers["Location"] == f"/silences?done=expired&id={silence.id}"
    expired = store.get(silence.id)
    assert expired is not None and expired.state(time.time()) == "expired"
    assert float(r.zscore(KEYS.groups, "group-later") or 0) <= time.time()  # woken, as silence expire does
    assert "expired: what it muted is notified again" in get(f"{ops}{headers['Location']}")[2]
    code, headers, _ = post(ops, f"/silences/{silence.id}/expire", {"token": TOKEN})
    assert code == 303 and "done=unchanged" in headers["Location"]
    assert post(ops, "/silences/no-such-id/expire", {"token": TOKEN})[0] == 404


def test_without_a_configured_token_the_page_is_read_only(
    r: redis_lib.Redis, redis_url: str, web: str
) -> None:
    silence = SilenceStore(r, KEYS).add(
        ["account=BIN-X"], 3600, "maintenance", "ops", time.time(), MAX_DURATION
    )
    before = redis_state(redis_url)
    for path in ("/silences", f"/silences/{silence.id}/expire"):
        code, _, body = post(web, path, add_form())
        assert code == 403 and "read-only" in body
        code, _, _ = post(web, path, add_form(), {"Authorization": "Bearer "})
        assert code == 403
    assert redis_state(redis_url) == before
    for page in (get(f"{web}/")[2], get(f"{web}/silences")[2]):
        assert silence.id in page and "<form" not in page and "Read-only: no operator token" in page


@pytest.mark.parametrize(
    "auth",
    [
        {"token": "wrong"},
        {},
        {"token": ""},
        {"token": TOKEN[:-1]},
        {"header": "Bearer wrong"},
        {"header": f"Basic {TOKEN}"},
    ],
)
def test_a_wrong_or_missing_token_is_refused_and_nothing_is_written(
    r: redis_lib.Redis, redis_url: str, ops: str, auth: dict[str, str]
) -> None:
    silence = SilenceStore(r, KEYS).add(
        ["account=BIN-X"], 3600, "maintenance", "ops", time.time(), MAX_DURATION
    )
    before = redis_state(redis_url)
    form = {k: v for k, v in add_form().items() if k != "token"} | (
        {"token": auth["token"]} if "token" in auth else {}
    )
    headers = {"Authorization": auth["header"]} if "header" in auth else {}
    for path in ("/silences", f"/silences/{silence.id}/expire"):
        code, _, body = post(ops, path, form, headers)
        assert (code, body) == (403, "wrong or missing operator token\n")
    assert redis_state(redis_url) == before


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"matchers": "account=a b"}, "unquoted value contains ' '"),
        ({"matchers": 'account=~"("'}, "invalid regular expression"),
        ({"matchers": " \n "}, "at least one matcher"),
        ({"matchers": 'account=""'}, "would silence every alert"),
        ({"duration": "soon"}, "duration: must be"),
        ({"duration": "2d"}, "at most 1d"),
        ({"duration": "0"}, "more than 0"),
        ({"reason": "  "}, "a reason is required"),
        ({"by": ""}, "the author (by) is required"),
    ],
)
def test_bad_input_is_400_with_the_reason_and_nothing_is_written(
    redis_url: str, ops: str, fields: dict[str, str], reason: str
) -> None:
    before = redis_state(redis_url)
    code, _, body = post(ops, "/silences", add_form(**fields))
    assert code == 400 and reason in body
    assert redis_state(redis_url) == before


def test_a_body_over_the_limit_is_413_and_nothing_is_written(redis_url: str, ops: str) -> None:
    before = redis_state(redis_url)
    code, _, body = post(ops, "/silences", add_form(reason="x" * MAX_BODY))
    assert code == 413 and str(MAX_BODY) in body
    huge = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(10**9)}
    code, _, _ = raw_post(ops, "/silences", b"", huge)  # declared only: never read
    assert code == 413
    assert post(ops, "/silences", add_form())[0] == 303  # the limit is above an ordinary form
    assert len(redis_state(redis_url)) > len(before)


def test_other_bodies_and_paths_are_refused(redis_url: str, ops: str) -> None:
    before = redis_state(redis_url)
    code, _, body = raw_post(ops, "/silences", b'{"matchers": []}', {"Content-Type": "application/json"})
    assert code == 400 and "application/x-www-form-urlencoded" in body
    assert (
        raw_post(ops, "/silences", b"\xff\xfe=1", {"Content-Type": "application/x-www-form-urlencoded"})[0]
        == 400
    )
    assert post(ops, "/", add_form())[0] == 404
    assert post(ops, "/silences/x/y", add_form())[0] == 404
    assert redis_state(redis_url) == before


def test_hostile_text_of_a_silence_is_escaped_and_the_notice_accepts_only_its_own_words(
    r: redis_lib.Redis, ops: str
) -> None:
    code, headers, _ = post(
        ops,
        "/silences",
        add_form(matchers='account="<img src=x>"', reason="<script>x()</script>", by='"><b>'),
    )
    assert code == 303
    page = get(f"{ops}{headers['Location']}")[2]
    assert "<script" not in page and "<img" not in page and '"><b>' not in page
    assert "&lt;script&gt;x()&lt;/script&gt;" in page and "&lt;img src=x&gt;" in page
    forged = get(f"{ops}/silences?done=%3Cscript%3E&id=1")[2]
    assert "notice" not in forged.split("</style>")[1]
    forged = get(f"{ops}/silences?done=added&id=%3Cimg%3E")[2]
    assert "notice" not in forged.split("</style>")[1]


def test_the_token_is_never_in_a_page_nor_in_the_logs(
    r: redis_lib.Redis, ops: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code, headers, _ = post(ops, "/silences", add_form())
    post(ops, "/silences", add_form(token=TOKEN + "x"))
    post(ops, f"/silences/{added_id(headers)}/expire", {}, {"Authorization": f"Bearer {TOKEN}"})
    pages = [get(f"{ops}{path}")[2] for path in ("/", "/silences", headers["Location"], "/api/status")]
    assert (
        code == 303 and "added from the web page" in caplog.text and "wrong or missing token" in caplog.text
    )
    assert not [p for p in pages if TOKEN in p] and TOKEN not in caplog.text


def test_the_web_settings_read_the_token_as_a_secret_and_a_blank_one_as_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("MONITORX_WEB_TOKEN", TOKEN)
    settings = WebSettings()
    assert settings.web_token is not None and settings.web_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)
    monkeypatch.setenv("MONITORX_WEB_TOKEN", "  ")
    assert WebSettings().web_token is None
    monkeypatch.delenv("MONITORX_WEB_TOKEN")
    assert WebSettings().web_token is None and WebSettings().silence_max_hours == 24
