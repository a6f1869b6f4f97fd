"""Secrets under faults: the Galio password, the Slack and webhook URLs and the Redis password
never show up in any process's output (DEBUG everywhere, error paths taken), in Redis (queued job
arguments included), in ``rq info`` or in the JSONL sink."""

from __future__ import annotations

import secrets
from pathlib import Path

from shared.keys import QUEUE_NAME
from simulator.frames import binance_account
from tests.faults.harness import (
    Expect,
    Pipelines,
    RedisFactory,
    assert_clean,
    low_balance_config,
    secret_leaks,
    stop_cleanly,
    tally,
)
from tests.slack_standin import Reply, SlackStandin

LOW = binance_account(1)
QUEUED = f"rq:queue:{QUEUE_NAME}"
LOW_NOW = ("--scenario", "steady", "--hz", "5", "--accounts", "2", "--no-okx", "--low-at", "0")


def test_no_secret_in_logs_redis_job_arguments_or_rq_info(
    pipelines: Pipelines, slack: SlackStandin, make_redis: RedisFactory, tmp_path: Path
) -> None:
    redis_password = f"redis-pw-{secrets.token_hex(8)}"
    server = make_redis(password=redis_password)
    slack.script(Reply(500, "internal_error"), Reply(500, "internal_error"), Reply(500, "internal_error"))
    with SlackStandin() as webhook:
        webhook.default = Reply(404, "no such hook")
        hook_url = webhook.url(f"/hooks/{secrets.token_hex(12)}")
        env = {"MONITORX_LOG_LEVEL": "DEBUG", "MONITORX_WEBHOOK_URL": hook_url}
        config = low_balance_config(tmp_path / "c.yaml")
        pipeline = pipelines(config, slack=slack, redis_url=server.url, env=env)
        hidden = (redis_password, hook_url, hook_url.split("/", 3)[3])
        pipeline.start_simulator(*LOW_NOW)
        # no worker yet: the jobs wait in the queue with their arguments
        pipeline.start_alerter()
        pipeline.start_dispatcher()
        pipeline.start_ingestor()
        pipeline.wait(lambda: pipeline.r.llen(QUEUED) > 0, 20, "jobs in the queue")
        assert secret_leaks(pipeline, *hidden) == []

        pipeline.start_worker("secret-keeper")
        pipeline.wait(lambda: pipeline.alerts(), 20, "the alert")
        pipeline.wait(lambda: pipeline.drained() and slack.ok, 20, "the alert on Slack past its 500s")
        stop_cleanly(pipeline)

    assert_clean(tally([Expect("low_balance", LOW)], pipeline, slack))
    assert [p.status for p in webhook.received] == [404]
    assert secret_leaks(pipeline, *hidden) == []
