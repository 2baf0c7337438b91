"""What each error answer means, for the OpenAPI document: one description per status (a view
may give its own, naming the codes it raises), and an example body for every error code.

A description names its codes in backticks; the document gets an example of each (`examples`).
"""

from __future__ import annotations

import re
from typing import Any

WITH_BODY = {
    400: "`invalid_input`: a field, parameter or header is wrong (`field` names it, e.g. "
         "`inputs[0][2]`); `malformed_json`: the body is not one JSON object",
    408: "`request_timeout`: the body stalled or came too slowly; the connection is closed",
    413: "`payload_too_large`: the body is larger than the API accepts "
         "(PREDQ_MAX_BODY_BYTES)",
    415: "`unsupported_media_type`: the body is not `application/json`",
}
JOBS_MEDIA = ("`unsupported_media_type`: the body is neither JSON nor a bulk format (CSV, "
              "NDJSON, .npy, Parquet, Arrow)")
GENERAL = {
    400: "`invalid_input`: a parameter is wrong; `field` names it",
    401: "`unauthorized`: no key, or a wrong, revoked or expired key "
         "(send `Authorization: Bearer KEY`)",
    403: "`forbidden`: the key lacks the scope this needs (`read` for GET, `submit` for changes, "
         "`admin` for keys)",
    404: "`not_found`: unknown, or another tenant's (the two look the same)",
    503: "`unavailable`: the result store or Redis is down; nothing was done, retry later",
}
JOB_NOT_FOUND = "`job_not_found`: no such job, or another tenant's (the two look the same)"
NOT_RETRYABLE = ("`conflict`: the job is still queued or running; `inputs_not_kept`: its inputs "
                 "are gone (a bulk upload submitted without `keep_inputs=true`)")
MODEL_NOT_FOUND = "`model_not_found`: no model (or version) of that name is registered"
KEY_REUSED = "`idempotency_key_reused`: the `Idempotency-Key` was used for a different request"
ENDPOINT_NOT_FOUND = ("`webhook_endpoint_not_found`: no such endpoint, or another tenant's "
                      "(the two look the same)")
TOO_MANY_ENDPOINTS = ("`too_many_endpoints`: the tenant has as many webhook endpoints as "
                      "PREDQ_WEBHOOK_MAX_ENDPOINTS allows; delete one first")
UNSAFE_URL = ("`unsafe_webhook_target`: the URL would reach this machine, a private network or "
              "a scheme other than http(s)")
NOT_CONFIGURED = ("`not_configured`: the operator has not set PREDQ_SECRET_KEY, which webhook "
                  "secrets need")
#: Every authenticated call counts against the tenant's requests per second, if it has a limit
#: (service/api/quotas.py): a 429 that any /v1 operation can answer.
RATE_LIMITED = ("`rate_limited`: the tenant is over its requests per second (`predq limits "
                "set`); retry after `Retry-After` seconds")
#: Submissions also wait for a queue slot and count rows (service/jobs/submit.py).
SUBMIT_REFUSED = ("`queue_full`: the queue, or this tenant's share of it, is full; "
                  "`rate_limited`: the tenant is over its requests per second or its rows per "
                  "minute. Nothing was accepted: retry after `Retry-After` seconds")

_JOB = "0f8b6a4e-3c1d-4e5f-9a7b-2c6d8e0f1a2b"
EXAMPLES: dict[str, dict[str, Any]] = {
    "invalid_input": {"code": "invalid_input", "field": "inputs[0]",
                      "message": "inputs[0]: 3 values; the model takes 4 features"},
    "malformed_json": {"code": "malformed_json",
                       "message": "malformed JSON at line 1 column 12: Expecting value"},
    "unsafe_webhook_target": {"code": "unsafe_webhook_target", "field": "url",
                              "message": "url: 10.0.0.5 is not a public address"},
    "unauthorized": {"code": "unauthorized", "message": "invalid or revoked API key"},
    "forbidden": {"code": "forbidden",
                  "message": "this API key lacks the 'submit' scope (it has: read)"},
    "not_found": {"code": "not_found", "message": "no active key 'pq_3f9a2c1'"},
    "job_not_found": {"code": "job_not_found", "message": f"job '{_JOB}' not found"},
    "model_not_found": {"code": "model_not_found", "field": "model",
                        "message": "model 'irs' is not registered"},
    "webhook_endpoint_not_found": {
        "code": "webhook_endpoint_not_found",
        "message": "webhook endpoint 'we_5b0c2d9e8f7a41b3a6c5d4e3f2a1b0c9' not found"},
    "not_acceptable": {"code": "not_acceptable", "message": "send Accept: application/json, "
                       "application/x-ndjson, text/csv, application/x-npy"},
    "request_timeout": {"code": "request_timeout",
                        "message": "the request body stalled for 10 seconds"},
    "job_not_finished": {"code": "job_not_finished", "status": "running",
                         "message": f"job {_JOB} has no result: it is running"},
    "conflict": {"code": "conflict", "message": f"job {_JOB} is already succeeded; only a "
                 "queued or running job can be cancelled"},
    "inputs_not_kept": {"code": "inputs_not_kept", "message": f"job {_JOB} did not keep its "
                        "inputs (an upload keeps them only when submitted with "
                        "keep_inputs=true); upload its file again, with ?keep_inputs=true to "
                        "make it retryable"},
    "payload_too_large": {"code": "payload_too_large",
                          "message": "request body exceeds 10485760 bytes"},
    "unsupported_media_type": {"code": "unsupported_media_type",
                               "message": "send Content-Type: application/json, or a bulk "
                                          "body: text/csv, application/x-ndjson, "
                                          "application/x-npy, application/vnd.apache.parquet, "
                                          "application/vnd.apache.arrow.stream, "
                                          "application/vnd.apache.arrow.file; not text/plain"},
    "idempotency_key_reused": {
        "code": "idempotency_key_reused", "field": "Idempotency-Key", "job_id": _JOB,
        "message": f"Idempotency-Key 'nightly-2026-12-01' was used for a different request "
                   f"(job {_JOB}); use a new key for a new request"},
    "prediction_failed": {"code": "prediction_failed", "job_id": _JOB,
                          "message": "ValueError: Input contains NaN"},
    "rate_limited": {"code": "rate_limited", "retry_after": 1,
                     "message": "acme is over its rate limit of 20 per 1 second; "
                                "see Retry-After"},
    "queue_full": {"code": "queue_full", "retry_after": 12,
                   "message": "queue predict.interactive is full (5000 jobs waiting, limit "
                              "5000); retry later"},
    "unavailable": {"code": "unavailable", "message": "the result store is unavailable; retry"},
    "too_many_endpoints": {"code": "too_many_endpoints", "field": "url",
                           "message": "this tenant has 20 webhook endpoints, the most allowed: "
                                      "delete one first (or ask the operator to raise "
                                      "PREDQ_WEBHOOK_MAX_ENDPOINTS)"},
    "not_configured": {"code": "not_configured", "message": "webhooks need PREDQ_SECRET_KEY "
                       "(a Fernet key) to keep their signing secrets; ask the operator to set "
                       "it"},
}
_CODE = re.compile(r"`([a-z_]+)`")


def codes(description: str) -> list[str]:
    """The error codes a description names (in backticks), in order."""
    return [code for code in _CODE.findall(description) if code in EXAMPLES]


def examples(description: str) -> dict[str, dict[str, Any]]:
    """An OpenAPI `examples` map: one example body per code the description names."""
    return {code: {"summary": code, "value": {"error": EXAMPLES[code]}}
            for code in codes(description)}
