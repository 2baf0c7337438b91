import pytest
from sqlalchemy import Engine, delete, select

from service.core.errors import Unauthorized
from service.store.db import api_keys
from service.tenants import keys


def test_only_a_hash_of_the_key_is_stored_and_it_authenticates(engine: Engine) -> None:
    with engine.begin() as conn:
        key = keys.create_key(conn, "keys-test")
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(api_keys).where(api_keys.c.tenant == "keys-test")).one()
            assert key not in [str(v) for v in stored]
            assert stored.key_hash == keys.hash_key(key)
            assert keys.authenticate(conn, key) == "keys-test"
            with pytest.raises(Unauthorized):
                keys.authenticate(conn, key + "x")
        with engine.begin() as conn:
            assert keys.revoke_key(conn, key[:10]) == 1
        with engine.connect() as conn, pytest.raises(Unauthorized):
            keys.authenticate(conn, key)
    finally:
        with engine.begin() as conn:
            conn.execute(delete(api_keys).where(api_keys.c.tenant == "keys-test"))


def test_tenant_names_are_checked(engine: Engine) -> None:
    from service.core.errors import InvalidInput

    with engine.begin() as conn, pytest.raises(InvalidInput):
        keys.create_key(conn, "bad tenant/name")
