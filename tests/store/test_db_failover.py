"""PostgreSQL through a multi-host DATABASE_URL (`make_engine`, service/store/pgsession.py): a
process finds the primary among the hosts, follows a promoted standby, and - with a synchronous
standby - no commit it was told of is missing after the promotion. Private clusters only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from service.store.db import make_engine
from tests.support import pgserver

pytestmark = pytest.mark.skipif(not pgserver.available(),
                                reason="needs root and PostgreSQL server binaries")


@pytest.fixture
def pair() -> Iterator[tuple[pgserver.PrivatePostgres, pgserver.PrivatePostgres]]:
    """A primary and its synchronous standby, streaming."""
    primary = pgserver.PrivatePostgres()
    standby = None
    try:
        primary.start()
        standby = pgserver.PrivatePostgres(standby_of=primary)
        standby.start()
        primary.require_synchronous_standby()
        primary.sql("CREATE TABLE accepted (id integer PRIMARY KEY)")
        yield primary, standby
    finally:
        for server in (standby, primary):
            if server is not None:
                server.remove()


def served_by(engine: Engine) -> tuple[int, bool]:
    """The port of the server a new statement reaches, and whether it is a standby."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT inet_server_port(), pg_is_in_recovery()")).one()
    return int(row[0]), bool(row[1])


def test_a_process_finds_the_primary_whichever_host_is_named_first(
        pair: tuple[pgserver.PrivatePostgres, pgserver.PrivatePostgres]) -> None:
    primary, standby = pair
    engine = make_engine(pgserver.multi_host_url(standby, primary))
    try:
        assert served_by(engine) == (primary.port, False)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO accepted VALUES (1)"))
    finally:
        engine.dispose()


def test_a_process_follows_the_promoted_standby_and_every_commit_is_there(
        pair: tuple[pgserver.PrivatePostgres, pgserver.PrivatePostgres]) -> None:
    primary, standby = pair
    engine = make_engine(pgserver.multi_host_url(primary, standby), pool_size=2)
    try:
        for n in range(1, 51):
            with engine.begin() as conn:  # each commit acknowledged: the standby has it
                conn.execute(text("INSERT INTO accepted VALUES (:n)"), {"n": n})
        primary.kill()
        standby.promote()
        deadline = time.monotonic() + 60
        while True:  # the pooled connections die with the primary, once each
            try:
                assert served_by(engine) == (standby.port, False)
                break
            except OperationalError:
                assert time.monotonic() < deadline, "the engine never reached the new primary"
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO accepted VALUES (51)"))
            assert conn.execute(text("SELECT count(*) FROM accepted")).scalar_one() == 51
    finally:
        engine.dispose()


def test_a_commit_waits_while_the_synchronous_standby_is_down(
        pair: tuple[pgserver.PrivatePostgres, pgserver.PrivatePostgres]) -> None:
    """The choice documented in docs/production.md: writes wait for the standby rather than
    exist on one server only; they go on once it is back."""
    primary, standby = pair
    engine = make_engine(primary.url)
    standby.stop()
    done = threading.Event()

    def commit() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO accepted VALUES (7)"))
        done.set()

    writer = threading.Thread(target=commit, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while primary.sql("SELECT count(*) FROM pg_stat_activity "
                          "WHERE wait_event = 'SyncRep'") != "1":
            assert time.monotonic() < deadline, "the commit did not wait for the standby"
            time.sleep(0.1)
        assert not done.is_set()
        standby.start()
        writer.join(60)
        assert done.is_set()
        assert standby.sql("SELECT count(*) FROM accepted WHERE id = 7") == "1"
    finally:
        engine.dispose()
