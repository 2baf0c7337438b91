"""A host that vanishes inside a transaction (its link cut: no FIN, no RST reach PostgreSQL)
gives its locks back in seconds, not after the kernel's two-hour keepalive.

Seen in `make cluster`: an API host killed inside a group INSERT kept an Idempotency-Key's row
locked, and the client's retry of that key on the other API host waited on it, with every job
that host committed after it. `make_engine` sets each PostgreSQL session's TCP keepalives and
user timeout (`service.store.pgsession.SESSION_SETTINGS`)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from service.store.db import make_engine
from tests.support import netns, pgserver

pytestmark = pytest.mark.skipif(not (netns.available() and pgserver.available()),
                                reason="needs root, iproute2 and PostgreSQL server binaries")


def test_a_session_whose_host_vanished_mid_transaction_releases_its_locks_in_seconds() -> None:
    net = netns.Network()
    pg = None
    try:
        db = net.add("db")
        net.add("app")
        pg = pgserver.PrivatePostgres(db.address, 5432, ("ip", "netns", "exec", db.netns))
        pg.start()
        local = make_engine(f"postgresql+psycopg://postgres@/postgres?host={pg.dir}&port=5432")
        with local.begin() as conn:
            conn.execute(text("CREATE TABLE held (k integer PRIMARY KEY)"))
        with net.inside("app"):  # the session's socket stays on the app host
            remote = make_engine(pg.url)
            held = remote.connect()
        held.execute(text("INSERT INTO held VALUES (1)"))  # uncommitted: the key is locked
        net.cut("app")  # the host is gone; PostgreSQL is not told

        started = time.monotonic()
        with local.begin() as conn:  # without keepalives this waits out the lock timeout
            conn.execute(text("SET LOCAL lock_timeout = '60s'"))
            conn.execute(text("INSERT INTO held VALUES (1)"))
        waited = time.monotonic() - started
        print(f"\nthe lock came back after {waited:.1f} s")
        assert waited < 30, f"the vanished host's lock was held {waited:.0f} s"
        with local.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM held")).scalar_one() == 1
        held.invalidate()  # no rollback over the cut link
        local.dispose()
    finally:
        net.close()
        if pg is not None:
            pg.remove()
