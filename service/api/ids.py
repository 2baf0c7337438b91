"""Route converters for ids of a fixed shape. A path segment that cannot be one gets the
router's 404 and never reaches a view: a fixed route such as /v1/webhooks/job-secret is not
taken for an id, and nothing a store cannot hold (PostgreSQL refuses a NUL in text) reaches SQL.

Job ids have none: every string answers like a missing job (tests/api/test_bola.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from service.webhooks.endpoints import ID_PATTERN


class EndpointId(BaseConverter):
    regex = ID_PATTERN


CONVERTERS: dict[str, type[BaseConverter]] = {"endpoint_id": EndpointId}
#: The same rules for /openapi.json, by converter name (spectree leaves them out).
SCHEMAS: dict[str, dict[str, Any]] = {
    name: {"type": "string", "pattern": f"^{converter.regex}$"}
    for name, converter in CONVERTERS.items()
}


def use_in(bp: Blueprint) -> None:
    """Let the rules of `bp` name the converters; call it before declaring them, since a rule
    looks its converter up when it is added."""

    def add(state: BlueprintSetupState) -> None:
        state.app.url_map.converters.update(CONVERTERS)

    bp.record_once(add)
