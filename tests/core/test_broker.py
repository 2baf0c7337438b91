"""The broker configuration both the API and the workers start from (service/core/broker.py)."""

import socket

from service.core.broker import make_producer
from service.core.settings import Settings

SENTINEL_URL = "redis+sentinel://s1:26379,s2:26379,s3:26379/predq/0"


def test_a_sentinel_group_gives_kombu_its_name_and_its_sentinels() -> None:
    app = make_producer(Settings.from_env({"REDIS_URL": SENTINEL_URL}))
    options = app.conf.broker_transport_options
    assert app.conf.broker_url.count("sentinel://") == 3
    assert options["master_name"] == "predq"
    assert options["sentinel_kwargs"]["socket_connect_timeout"] == 0.5


def test_the_visibility_timeout_is_the_same_in_the_three_places_celery_reads_it() -> None:
    app = make_producer(Settings.from_env({"REDIS_URL": SENTINEL_URL,
                                           "PREDQ_VISIBILITY_TIMEOUT": "1800"}))
    assert app.conf.broker_transport_options["visibility_timeout"] == 1800
    assert app.conf.result_backend_transport_options["visibility_timeout"] == 1800
    assert app.conf.visibility_timeout == 1800


def test_a_demoted_master_is_a_connection_to_retry_not_a_reason_to_stop() -> None:
    app = make_producer(Settings.from_env({"REDIS_URL": SENTINEL_URL}))
    assert app.conf.broker_channel_error_retry is True


def test_network_connections_to_redis_notice_a_vanished_host() -> None:
    options = make_producer(Settings.from_env({"REDIS_URL": "redis://cache:6379/0"})
                            ).conf.broker_transport_options
    assert options["socket_keepalive"] is True
    assert socket.TCP_USER_TIMEOUT in options["socket_keepalive_options"]
    unix = make_producer(Settings.from_env({"REDIS_URL": "unix:///tmp/r.sock"}))
    assert "socket_keepalive" not in unix.conf.broker_transport_options
    assert "master_name" not in unix.conf.broker_transport_options
