"""/v1/webhooks: a tenant's webhook endpoints and their signing secrets."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, jsonify

from service.api import error_docs, ids, services
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
@documented({201: (S.EndpointWithSecret, "The endpoint, with its signing secret (shown once)")},
            ((400, error_docs.WITH_BODY[400] + "; " + error_docs.UNSAFE_URL), 408,
             (409, error_docs.TOO_MANY_ENDPOINTS), 413, 415,
             (503, error_docs.GENERAL[503] + "; " + error_docs.NOT_CONFIGURED)),
            json=S.EndpointCreate, tags=["webhooks"])
def create() -> tuple[Response, int, dict[str, str]]:
    """Register a webhook endpoint

    From now on, every job of the tenant that ends is POSTed to `url` as a signed event
    (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`), retried with
    back-off until it answers 2xx; `events` picks which endings (default: all). The answer
    holds the endpoint's `whsec_` signing secret, shown this once: keep it to verify
    signatures. A tenant may register `PREDQ_WEBHOOK_MAX_ENDPOINTS` endpoints (20 by
    default); one more answers 409 `too_many_endpoints`."""
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
        endpoint, secret = endpoints.create(conn, svc.sealer, tenant, url, events,
                                            svc.settings.webhook_max_endpoints)
    location = f"/v1/webhooks/{endpoint.id}"
    return jsonify({**endpoint.public(), "secret": secret}), 201, {"Location": location}


@bp.get("")
@documented({200: (S.EndpointList, "The endpoints, without their secrets")}, tags=["webhooks"])
def list_endpoints() -> Response:
    """List the webhook endpoints

    The tenant's registered endpoints: URL, events, and whether deliveries to it were
    disabled (and why). Secrets are never shown again."""
    tenant = current_tenant()
    with services().reads.connect() as conn:
        found = endpoints.of_tenants(conn, {tenant})
    return jsonify({"endpoints": [e.public() for e in found if e.url is not None]})


@bp.get("/<endpoint_id:endpoint_id>")
@documented({200: (S.Endpoint, "The endpoint, without its secret")},
            ((404, error_docs.ENDPOINT_NOT_FOUND),), tags=["webhooks"])
def get_endpoint(endpoint_id: str) -> Response:
    """Get a webhook endpoint

    One endpoint of the tenant: URL, events, whether it is disabled and why, when it was
    made."""
    tenant = current_tenant()
    with services().reads.connect() as conn:
        return jsonify(endpoints.get(conn, tenant, endpoint_id).public())


@bp.delete("/<endpoint_id:endpoint_id>")
@documented({204: (None, "Deleted")}, ((404, error_docs.ENDPOINT_NOT_FOUND),), tags=["webhooks"])
def delete(endpoint_id: str) -> tuple[str, int]:
    """Delete a webhook endpoint

    Stops the endpoint's deliveries: jobs that end from now on send it no event, and its
    events still waiting for an attempt are given up at once (`dead`). Answers 204 with no
    body; its past deliveries stay in each job's delivery log."""
    tenant = current_tenant()
    with services().engine.begin() as conn:
        endpoints.delete_endpoint(conn, tenant, endpoint_id)
    return "", 204


@bp.post("/<endpoint_id:endpoint_id>/rotate")
@documented({200: (S.EndpointWithSecret, "The endpoint with its new secret (shown once)")},
            ((404, error_docs.ENDPOINT_NOT_FOUND),
             (503, error_docs.GENERAL[503] + "; " + error_docs.NOT_CONFIGURED)),
            tags=["webhooks"])
def rotate(endpoint_id: str) -> Response:
    """Rotate a webhook endpoint's secret

    Makes a new signing secret, shown this once. Until `previous_secret_valid_until` the old
    one goes on signing beside it (both signatures are sent), so the receiver can switch
    without missing an event."""
    tenant = current_tenant()
    svc = services()
    grace = timedelta(seconds=svc.settings.webhook_rotation_grace)
    with svc.engine.begin() as conn:
        endpoint, secret = endpoints.rotate(conn, svc.sealer, tenant, endpoint_id, grace)
    return jsonify({**endpoint.public(), "secret": secret,
                    "previous_secret_valid_until": iso(endpoint.previous_until)})


@bp.post("/job-secret")
@documented({200: (S.JobSecret, "Rotated: the new secret (shown once)"),
             201: (S.JobSecret, "Made: the secret (shown once)")},
            ((503, error_docs.GENERAL[503] + "; " + error_docs.NOT_CONFIGURED),),
            tags=["webhooks"])
def job_secret() -> tuple[Response, int]:
    """Make or rotate the secret for jobs' own webhooks

    A job may name its own `webhook_url`; deliveries to it are signed with this tenant-wide
    secret, which must exist before such a job is submitted. The first call makes it (201),
    later ones rotate it (200, the old one signing beside it for a grace period); it is
    shown once each time."""
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
