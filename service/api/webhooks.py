"""/v1/webhooks: a tenant's webhook endpoints and their signing secrets."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, jsonify

from service.api import ids, services
from service.api import schemas as S
from service.api.auth import current_tenant
from service.api.openapi import documented
from service.api.submission import check_fields, json_body
from service.core.errors import InvalidInput
from service.core.times import iso
from service.webhooks import endpoints
from service.webhooks.safety import UnsafeTarget, check_url

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")
ids.use_in(bp)  # /<endpoint_id:...> matches ids only: not job-secret, not failures


@bp.post("")
@documented({201: S.EndpointWithSecret}, (400, 413, 415), json=S.EndpointCreate,
            tags=["webhooks"])
def create() -> tuple[Response, int, dict[str, str]]:
    """Register an endpoint: 201 with its `whsec_` secret, shown this once."""
    tenant = current_tenant()
    body = json_body()
    check_fields(body, {"url", "events"})
    url = body.get("url")
    if not isinstance(url, str) or not url or len(url) > 2000:
        raise InvalidInput("url", "required: an http(s) URL of at most 2000 characters")
    svc = services()
    try:
        check_url(url, svc.webhook_allow)
    except UnsafeTarget as exc:  # the same reasons, under this request's field name
        exc.field, exc.message = "url", f"url: {exc.reason}"
        raise
    events = endpoints.check_events(body.get("events"))
    with svc.engine.begin() as conn:
        endpoint, secret = endpoints.create(conn, svc.sealer, tenant, url, events)
    location = f"/v1/webhooks/{endpoint.id}"
    return jsonify({**endpoint.public(), "secret": secret}), 201, {"Location": location}


@bp.get("")
@documented({200: S.EndpointList}, tags=["webhooks"])
def list_endpoints() -> Response:
    tenant = current_tenant()
    with services().reads.connect() as conn:
        found = endpoints.of_tenants(conn, {tenant})
    return jsonify({"endpoints": [e.public() for e in found if e.url is not None]})


@bp.get("/<endpoint_id:endpoint_id>")
@documented({200: S.Endpoint}, (404,), tags=["webhooks"])
def get_endpoint(endpoint_id: str) -> Response:
    tenant = current_tenant()
    with services().reads.connect() as conn:
        return jsonify(endpoints.get(conn, tenant, endpoint_id).public())


@bp.delete("/<endpoint_id:endpoint_id>")
@documented({204: None}, (404,), tags=["webhooks"])
def delete(endpoint_id: str) -> tuple[str, int]:
    tenant = current_tenant()
    with services().engine.begin() as conn:
        endpoints.delete_endpoint(conn, tenant, endpoint_id)
    return "", 204


@bp.post("/<endpoint_id:endpoint_id>/rotate")
@documented({200: S.EndpointWithSecret}, (404,), tags=["webhooks"])
def rotate(endpoint_id: str) -> Response:
    """A new secret, shown once; the old one goes on signing beside it for the grace period."""
    tenant = current_tenant()
    svc = services()
    grace = timedelta(seconds=svc.settings.webhook_rotation_grace)
    with svc.engine.begin() as conn:
        endpoint, secret = endpoints.rotate(conn, svc.sealer, tenant, endpoint_id, grace)
    return jsonify({**endpoint.public(), "secret": secret,
                    "previous_secret_valid_until": iso(endpoint.previous_until)})


@bp.post("/job-secret")
@documented({200: S.JobSecret, 201: S.JobSecret}, tags=["webhooks"])
def job_secret() -> tuple[Response, int]:
    """The secret that signs deliveries to jobs' own `webhook_url`: made on the first call
    (201), rotated on later ones (200), shown once each time."""
    tenant = current_tenant()
    svc = services()
    grace = timedelta(seconds=svc.settings.webhook_rotation_grace)
    with svc.engine.begin() as conn:
        existing = endpoints.job_secret(conn, tenant)
        if existing is None:
            endpoint, secret = endpoints.create(conn, svc.sealer, tenant, None, [])
            return jsonify({"id": endpoint.id, "secret": secret}), 201
        endpoint, secret = endpoints.rotate(conn, svc.sealer, tenant, existing.id, grace)
    return jsonify({"id": endpoint.id, "secret": secret,
                    "previous_secret_valid_until": iso(endpoint.previous_until)}), 200
