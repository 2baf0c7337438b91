"""The synchronous callers' wake-ups (service/jobs/wakeups.py) follow a Sentinel group to its
new master when the old one dies."""

from __future__ import annotations

from service.jobs.wakeups import DONE_CHANNEL, ResultWaiter, announce_done
from service.store.redisclient import redis_client
from tests.support.sentinel import SentinelGroup, wait_until


def test_a_waiter_is_woken_by_an_announcement_on_the_promoted_replica(
        sentinel_group: SentinelGroup) -> None:
    waiter = ResultWaiter(sentinel_group.url)
    try:
        waiter.expect("before")
        announce_done(redis_client(sentinel_group.url), ["before"])
        assert waiter.wait("before", 30)

        new = sentinel_group.kill_master()
        # The listener's subscription died with the old master: it must subscribe again, on
        # the new one (a listener stuck on the dead master never shows up here).
        wait_until(lambda: sentinel_group.client(new).pubsub_numsub(DONE_CHANNEL)[0][1] == 1,
                   "the waiter to subscribe on the new master", timeout=60)
        waiter.expect("after")
        announce_done(redis_client(sentinel_group.url), ["after"])
        assert waiter.wait("after", 30)
    finally:
        waiter.close()
