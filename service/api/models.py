"""/v1/models: what can be predicted, with its signature."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from service import registry
from service.api import services
from service.api.auth import current_tenant
from service.errors import ModelNotFound

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
def list_models() -> Response:
    current_tenant()
    with services().reads.connect() as conn:
        infos = registry.list_models(conn)
    latest: dict[str, registry.ModelInfo] = {}
    for info in infos:  # ordered by id: the last one seen is the latest
        latest[info.name] = info
    return jsonify({
        "models": [
            {**info.public(), "versions": [i.version for i in infos if i.name == info.name]}
            for info in latest.values()
        ]
    })


@bp.get("/<name>")
def get_model(name: str) -> Response:
    current_tenant()
    with services().reads.connect() as conn:
        infos = registry.list_models(conn, name)
    if not infos:
        raise ModelNotFound(name)
    return jsonify({**infos[-1].public(), "versions": [i.public() for i in infos]})


@bp.get("/<name>/versions/<version>")
def get_version(name: str, version: str) -> Response:
    current_tenant()
    with services().reads.connect() as conn:
        return jsonify(registry.resolve(conn, name, version).public())
