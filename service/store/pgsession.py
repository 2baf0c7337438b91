"""How predq's PostgreSQL connections are opened and set up: libpq's client options (how long
a connection attempt and an unanswered request may take, so that a primary that vanished is
left for the next host of a multi-host URL), each session's server-side settings, and results
in the binary protocol."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy.engine import make_url

#: libpq's options on predq's side of each connection, unless DATABASE_URL says otherwise.
#: A primary that dies with its host sends no RST: without them a new connection would wait
#: 130 s on it (psycopg's default) before it tries the next host of the URL (the promoted
#: standby), and a pooled connection whose statement it never answered would wait for the
#: kernel's 15 minutes of retransmissions. So an attempt gives up after 2 s (libpq's least),
#: an unacknowledged request after 5 s, and an idle connection is probed after 5 s and
#: dropped 3 s later. A healthy server acknowledges within milliseconds however busy it is:
#: these never end a slow query.
CLIENT_OPTIONS = {
    "connect_timeout": "2", "keepalives": "1", "keepalives_idle": "5",
    "keepalives_interval": "1", "keepalives_count": "3", "tcp_user_timeout": "5000",
}

#: Each PostgreSQL session's settings, so that a client host that vanishes mid-transaction (its
#: link cut, its machine gone: no FIN, no RST) cannot hold its locks for the two hours of the
#: kernel's default keepalive. Seen in `make cluster`: an API host killed inside a group INSERT
#: kept its Idempotency-Key's row locked, and the client's retry of that key on the other API
#: host waited on it, and with it every job that host committed after. Keepalives end such a
#: session about 11 s after the host's last packet, and the user timeout 20 s after it when
#: its last answer was never acknowledged (the host died first: TCP then retransmits for 15
#: minutes and keepalives never start). A process frozen inside a transaction (SIGSTOP, a
#: hung VM) is ended after a minute without a statement. predq holds no
#: transaction open while it waits on anything but the database (result downloads read each
#: chunk outside one).
SESSION_SETTINGS = {
    "tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
    "tcp_user_timeout": "20s", "idle_in_transaction_session_timeout": "60s",
}


def client_options(url: str) -> dict[str, str]:
    """CLIENT_OPTIONS but those DATABASE_URL names itself (its query string wins)."""
    named = make_url(url).query
    return {name: value for name, value in CLIENT_OPTIONS.items() if name not in named}


def postgresql_session(dbapi_connection: Any, _record: Any) -> None:
    """On each new connection: SESSION_SETTINGS, and binary results."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    with dbapi_connection.cursor() as cursor:
        for name, value in SESSION_SETTINGS.items():
            cursor.execute(f"SET {name} = '{value}'")
    dbapi_connection.autocommit = autocommit
    dbapi_connection.cursor_factory = binary_results_cursor()


@functools.cache
def binary_results_cursor() -> type:
    """psycopg's cursor, asking PostgreSQL for results in the binary protocol: a bytea column
    (a bulk chunk's rows, 1.6 MB for 10,000 rows of 20 features) arrives as its bytes, not as
    hex text that the server encodes and the client decodes again; numbers and timestamps
    skip their text form too."""
    import psycopg

    class BinaryResults(psycopg.Cursor):  # type: ignore[type-arg]
        def __init__(self, connection: Any, *, row_factory: Any = None) -> None:
            super().__init__(connection, row_factory=row_factory)
            self.format = psycopg.pq.Format.BINARY

    return BinaryResults
