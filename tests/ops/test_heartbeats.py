"""Worker heartbeats in a real Redis: rates over the same minute as the dashboard's own."""

from __future__ import annotations

import time

import redis

from service.core.settings import Settings
from service.ops import heartbeats


def test_a_worker_s_rates_are_over_the_last_minute_like_the_dashboard_s(
    settings: Settings,
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    who = heartbeats.Identity("rate-host", 9101, "celery@rate-host", ("predict.normal",), 2)
    try:
        heartbeats.heartbeat(client, who.name, who)
        now = time.time()
        # Its beats of the last two minutes: 0 jobs 90 s ago, 30 jobs 45 s ago; 60 jobs now.
        client.hset(heartbeats.record_key(who.name), "snaps",
                    f"{now - 90}:0:0;{now - 45}:30:300")
        heartbeats.Tally(client, who.name).add(60, 600)
        [state] = [w for w in heartbeats.workers(client, now) if w.identity.name == who.name]
        # Over the last minute or a little more (from the beat 90 s ago), not the last beat:
        # a burst that ended 30 s ago still shows, as it does in the jobs/s of /v1/stats.
        assert state.jobs_per_second == round(60 / 90, 2)
        assert state.rows_per_second == round(600 / 90, 2)
        heartbeats.heartbeat(client, who.name, who)  # a beat keeps the snapshots of 2 minutes
        kept = client.hget(heartbeats.record_key(who.name), "snaps")
        assert kept is not None and len(kept.decode().split(";")) == 3
    finally:
        heartbeats.forget(client, who.name)
        client.close()
