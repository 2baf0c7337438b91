"""The OpenAPI 3.1 description, generated from the views' own declarations (spectree) and
served at `/openapi.json` (`/docs` shows it: apidocs.py)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, jsonify
from spectree import Response as Responses
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.metadata import register_validated_function
from spectree.models import SecureType

import service
from service.api import error_docs, ids
from service.api.schemas import Error
from service.bulk import formats

F = TypeVar("F", bound=Callable[..., Any])

spec = SpecTree(
    "flask", mode="strict", title="predq", version=service.__version__,
    description=(
        "Asynchronous predictions from scikit-learn models. Submit rows with `POST /v1/jobs` "
        "(202 and a job id at once), poll `GET /v1/jobs/{job_id}`, then fetch "
        "`GET /v1/jobs/{job_id}/result`; or call `POST /v1/models/{name}/predict` to wait for "
        "the answer in the same request.\n\n"
        "Every `/v1` call needs an API key, sent as `Authorization: Bearer KEY` (`predq up` "
        "prints one). On this page, press **Authorize**, paste the key, then **Try it out** "
        "on any operation; the key stays in the page's memory only.\n\n"
        "Every error answers `{\"error\": {\"code\", \"message\", \"field\"?}}`; each "
        "operation lists the codes it can answer, by status."),
    security_schemes=[SecurityScheme(
        name="bearer", data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer"))],
    security={"bearer": []}, annotations=False, path="apidoc",
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
)

Errors = tuple[int | tuple[int, str], ...]


def documented(ok: dict[int, Any], errors: Errors = (), *, public: bool = False,
               submits: bool = False, **kwargs: Any) -> Callable[[F], F]:
    """Describe a view in the OpenAPI document without wrapping it: the request path stays as
    fast as it was. `ok` maps success statuses to body models (None: no body); `errors` names
    the other statuses the view itself can answer, each with the error_docs description or its
    own (naming its codes). Authenticated views (not `public`) can also answer 401, 403, 429
    (the tenant's request rate; `submits`: also a full queue or the rows quota) and 503.

    The summary and description are the view's docstring: its first paragraph, then the rest."""
    table = error_docs.GENERAL | (error_docs.WITH_BODY if "json" in kwargs else {})
    described: dict[int, str] = {}
    if not public:
        described |= {status: error_docs.GENERAL[status] for status in (401, 403, 503)}
        described[429] = error_docs.SUBMIT_REFUSED if submits else error_docs.RATE_LIMITED
    for error in errors:
        status, text = error if isinstance(error, tuple) else (error, table[error])
        described[status] = text
    codes = {f"HTTP_{status}": model for status, model in ok.items()}
    codes |= {f"HTTP_{status}": (Error, text) for status, text in described.items()}
    if public:
        kwargs["security"] = {}

    def decorate(func: F) -> F:
        wrapper = spec.validate(resp=Responses(**codes), skip_validation=True, **kwargs)(func)
        # spectree keys its metadata by the wrapper it returns; key it by the view itself, so
        # Flask calls the view directly (spectree pinned <4; a test checks every route is here).
        spec._function_metadata[func] = spec._function_metadata[wrapper]  # noqa: SLF001
        register_validated_function(func)
        return func

    return decorate


def register(app: Flask) -> None:
    """Serve the document; the spec is built once, from the app's routes."""
    spec.app = app

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(document())


_document: dict[str, Any] | None = None
_building = threading.Lock()


def document() -> dict[str, Any]:
    """The OpenAPI document, built once per process. Concurrent first requests (several
    clients starting together) wait for one build: two at once used to amend spectree's own
    dict twice, answering with every bulk parameter listed twice."""
    global _document
    if _document is not None:
        return _document
    with _building:
        if _document is None:
            _document = _build(copy.deepcopy(spec.spec))
    return _document


def _build(doc: dict[str, Any]) -> dict[str, Any]:
    """Amend spectree's document (a copy of it) with what it cannot say itself."""
    # spectree documents a 422 for its own request validation, which predq does not use (its
    # views name the exact field in a 400): drop it where the view did not declare one.
    for operations in doc["paths"].values():
        for op in operations.values():
            answer = op["responses"].get("422", {})
            if "ValidationError" in json.dumps(answer):
                del op["responses"]["422"]
    schemas = doc["components"]["schemas"]
    for name in [n for n in schemas if n.startswith("ValidationError")]:
        del schemas[name]
    _describe_path_parameters(doc)
    _error_examples(doc)
    for tag in doc["tags"]:
        if tag["name"] in TAGS:
            tag["description"] = TAGS[tag["name"]]
    add_links(doc)
    _bulk_media(doc)
    return doc


#: What each path parameter names, wherever it appears.
PATH_PARAMETERS = {
    "job_id": "the job's id, as the submit answered it",
    "name": "a registered model's name (GET /v1/models lists them)",
    "version": "one of the model's versions (GET /v1/models/{name} lists them)",
    "endpoint_id": "the webhook endpoint's id (`we_...`), as its registration answered it",
    "prefix": "the key's prefix: its first 10 characters, as GET /v1/keys lists them",
}


def _describe_path_parameters(doc: dict[str, Any]) -> None:
    """Path parameters: what they name, and schemas for those of predq's own route converters
    (all named after them)."""
    for operations in doc["paths"].values():
        for op in operations.values():
            for parameter in op.get("parameters", []):
                if parameter["in"] == "path":
                    parameter["description"] = PATH_PARAMETERS[parameter["name"]]
                    if parameter["schema"] is None:
                        parameter["schema"] = ids.SCHEMAS[parameter["name"]]


TAGS = {
    "jobs": "Submit prediction jobs, follow them, fetch their results, cancel them",
    "predict": "One request that waits for its predictions",
    "models": "The registered models and their signatures: what `inputs` each takes",
    "webhooks": "Signed POSTs to your endpoints when jobs end; their delivery log",
    "keys": "The tenant's API keys (admin scope)",
    "rollouts": "A model's rollout: weighted versions, a shadow, the comparison of two "
                "versions on live traffic (operator scope, granted only by the command line)",
    "operations": "The workers, the queues over time: figures of the installation, for the "
                  "dashboard",
    "health": "Liveness and readiness probes (no key)",
}
RETRY_AFTER = {"description": "seconds to wait before trying again",
               "schema": {"type": "integer", "minimum": 1}}


def _error_examples(doc: dict[str, Any]) -> None:
    """An example body for each error code an answer's description names; a 429 says when to
    retry in its Retry-After header."""
    for operations in doc["paths"].values():
        for op in operations.values():
            for status, answer in op["responses"].items():
                found = error_docs.examples(answer.get("description", ""))
                if found and status >= "400":
                    answer["content"]["application/json"]["examples"] = found
                if status == "429":
                    answer["headers"] = {"Retry-After": {**RETRY_AFTER, "required": True}}


_JOB = {"job_id": "$response.body#/id"}
_ENDPOINT = {"endpoint_id": "$response.body#/id"}
_JOB_LINKS = [
    ("GetJob", "get", "/v1/jobs/{job_id}", _JOB),
    ("GetResult", "get", "/v1/jobs/{job_id}/result", _JOB),
    ("CancelJob", "post", "/v1/jobs/{job_id}/cancel", _JOB),
    ("DeleteJob", "delete", "/v1/jobs/{job_id}", _JOB),
    ("GetDeliveries", "get", "/v1/jobs/{job_id}/deliveries", _JOB),
    ("Redeliver", "post", "/v1/jobs/{job_id}/deliveries/redeliver", _JOB),
    ("GetModel", "get", "/v1/models/{name}", {"name": "$response.body#/model"}),
    ("GetModelVersion", "get", "/v1/models/{name}/versions/{version}",
     {"name": "$response.body#/model", "version": "$response.body#/version"}),
]
#: OpenAPI links: where the ids in an answer lead. They document the workflow (submit, poll,
#: fetch the result, cancel) and let stateful clients and fuzzers follow it.
LINKS: dict[tuple[str, str, str], list[tuple[str, str, str, dict[str, str]]]] = {
    ("post", "/v1/jobs", "202"): _JOB_LINKS,
    ("post", "/v1/jobs", "200"): _JOB_LINKS,  # an Idempotency-Key replay: the same job
    ("post", "/v1/models/{name}/predict", "202"): _JOB_LINKS,
    ("post", "/v1/keys", "201"): [
        ("RevokeKey", "delete", "/v1/keys/{prefix}", {"prefix": "$response.body#/prefix"}),
    ],
    ("post", "/v1/webhooks", "201"): [
        ("GetEndpoint", "get", "/v1/webhooks/{endpoint_id}", _ENDPOINT),
        ("RotateEndpoint", "post", "/v1/webhooks/{endpoint_id}/rotate", _ENDPOINT),
        ("DeleteEndpoint", "delete", "/v1/webhooks/{endpoint_id}", _ENDPOINT),
    ],
}


def add_links(doc: dict[str, Any]) -> None:
    """Attach `LINKS` to the answers they start from, naming targets by their operationId."""
    paths = doc["paths"]
    for (method, path, status), links in LINKS.items():
        response = paths[path][method]["responses"][status]
        response["links"] = {
            name: {"operationId": paths[target][verb]["operationId"], "parameters": parameters}
            for name, verb, target, parameters in links
        }


_TEXT: dict[str, Any] = {"schema": {}}  # any body: lines of JSON, CSV text
_BINARY: dict[str, Any] = {"schema": {}}  # .npy, Parquet (OpenAPI 3.1: no schema)
#: A bulk body holds only rows, so its options come in the query; a JSON body carries its own
#: (a JSON job with any of these in the query answers 400). Each description says so first.
_BULK_ONLY = "Only with a bulk body (CSV, NDJSON, .npy, Parquet, Arrow), not JSON: "
BULK_QUERY = [
    ("model", "string", _BULK_ONLY + "the model's name (required)"),
    ("version", "string", _BULK_ONLY + "the version (default: the latest)"),
    ("priority", "string", _BULK_ONLY + "interactive, normal, bulk (the default) or 0-9"),
    ("deadline", "string", _BULK_ONLY + "seconds from now, or an ISO 8601 time"),
    ("webhook_url", "string", _BULK_ONLY + "told when the job ends"),
    ("keep_inputs", "boolean", _BULK_ONLY + "keep the input chunks once the job finishes "
                               "(a retry needs them)"),
    ("retention", "number", _BULK_ONLY + "seconds the finished job is kept"),
]


def _bulk_media(doc: dict[str, Any]) -> None:
    """POST /v1/jobs also takes every bulk format's body (options in the query); a result
    comes in any written format, as Accept asks (service/bulk/formats.py, the one registry)."""
    submit = doc["paths"].get("/v1/jobs", {}).get("post")
    if submit is not None:
        content = submit["requestBody"]["content"]
        content.update({media: _BINARY if fmt.binary else _TEXT
                        for fmt in formats.READABLE for media in fmt.media_types})
        submit.setdefault("parameters", []).extend(
            {"name": name, "in": "query", "required": False, "description": text,
             "schema": {"type": kind}} for name, kind, text in BULK_QUERY)
    for path, operations in doc["paths"].items():
        if path.endswith("/result") and "get" in operations:
            content = operations["get"]["responses"]["200"]["content"]
            content.update({fmt.media_type: _BINARY if fmt.binary else _TEXT
                            for fmt in formats.WRITABLE if fmt is not formats.JSON})
