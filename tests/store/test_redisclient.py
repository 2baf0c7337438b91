"""The one Redis client factory: every client it makes gives up on a dead server instead of
waiting on it, and follows a Sentinel group through a switch-over and through the death of its
master."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.store.redisclient import redis_client
from tests.support.sentinel import SentinelGroup


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    """A unix socket that accepts connections and never answers (a hung server)."""
    path = tmp_path / "silent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    thread.join(1)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.timeout(30)
def test_a_command_to_a_hung_server_times_out(silent_socket: str) -> None:
    client = redis_client(silent_socket, timeout=0.5)
    with pytest.raises(redis.TimeoutError):
        client.ping()


def test_a_client_for_blocking_reads_has_no_command_timeout(redis_url: str) -> None:
    client = redis_client(redis_url, timeout=None)
    assert client.ping()
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] is None and kwargs["socket_connect_timeout"] > 0
    client.close()


def test_a_client_writes_to_the_new_master_after_a_switch_over(
        sentinel_group: SentinelGroup) -> None:
    client = redis_client(sentinel_group.url)
    client.set("before", "1")
    old = sentinel_group.master()
    new = sentinel_group.failover()  # the client's connection now leads to a replica
    assert new != old
    client.set("after", "2")  # READONLY there: the client asks Sentinel again and retries
    on_new = sentinel_group.client(new)
    assert on_new.get("before") == b"1" and on_new.get("after") == b"2"
    assert sentinel_group.info(old, "role") == "slave"


def test_a_client_reaches_the_promoted_replica_after_its_master_is_killed(
        sentinel_group: SentinelGroup) -> None:
    client = redis_client(sentinel_group.url)
    client.set("before", "1")
    new = sentinel_group.kill_master()
    deadline = time.monotonic() + 30
    while True:  # the caller's retry: the first command may meet the dead master's socket
        try:
            client.set("after", "2")
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the client never reached the new master"
    assert sentinel_group.client(new).get("after") == b"2"
