import pytest

from service.core.redisurl import Sentinels, sentinels
from service.core.settings import Settings


def test_one_server_urls_name_no_sentinel_group() -> None:
    for url in ("redis://cache:6379/2", "rediss://cache:6380/0", "unix:///tmp/r.sock"):
        assert sentinels(url) is None


def test_a_sentinel_url_names_every_sentinel_the_group_and_its_database() -> None:
    group = sentinels("redis+sentinel://:s%40cret@s1:26379,s2:26380,s3/predq/2"
                      "?sentinel_password=theirs")
    assert group == Sentinels((("s1", 26379), ("s2", 26380), ("s3", 26379)), "predq", 2,
                              "s@cret", "theirs")


def test_a_sentinel_url_without_a_database_uses_the_first() -> None:
    group = sentinels("redis+sentinel://s1:26379/predq")
    assert group is not None and group.db == 0 and group.password is None


@pytest.mark.parametrize("url", ["redis+sentinel://s1:26379", "redis+sentinel:///predq",
                                 "redis+sentinel://s1:26379/predq/x",
                                 "redis+sentinel://s1:26379/a/1/2"])
def test_a_malformed_sentinel_url_stops_the_process_at_start(url: str) -> None:
    with pytest.raises(ValueError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": url})


def test_kombu_gets_one_sentinel_url_per_sentinel_with_the_password_and_database() -> None:
    settings = Settings.from_env(
        {"REDIS_URL": "redis+sentinel://:p%3Bw@s1:26379,s2:26379/predq/3"})
    assert settings.broker_url == "sentinel://:p%3Bw@s1:26379/3;sentinel://:p%3Bw@s2:26379/3"


def test_several_database_hosts_need_a_read_write_session() -> None:
    hosts = "postgresql+psycopg://u@/predq?host=pg1:5432&host=pg2:5432"
    with pytest.raises(ValueError, match="target_session_attrs=read-write"):
        Settings.from_env({"DATABASE_URL": hosts})
    with pytest.raises(ValueError, match="target_session_attrs=read-write"):
        Settings.from_env({"DATABASE_URL": "postgresql+psycopg://u@/predq?host=pg1,pg2"})
    assert Settings.from_env({"DATABASE_URL": hosts + "&target_session_attrs=read-write"})
    assert Settings.from_env({"DATABASE_URL": "postgresql+psycopg://u@pg1:5432/predq"})
