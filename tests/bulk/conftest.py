"""A module here starts its own `server` (a LiveServer with small chunks, its settings the
module's own); `client` is a fresh tenant on it, removed with its jobs after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from service.models.registry import ModelInfo
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant, make_tenant


@pytest.fixture
def client(engine: Engine, server: LiveServer, models: dict[str, ModelInfo]
           ) -> Iterator[Tenant]:
    yield from make_tenant(engine, server.url)
