"""The OpenAPI 3.1 description, generated from the views' own declarations (spectree):
`/openapi.json`, and a readable page at `/docs`."""

from __future__ import annotations

import copy
import html
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
from service.api import ids
from service.api.schemas import Error
from service.bulk import formats

F = TypeVar("F", bound=Callable[..., Any])

spec = SpecTree(
    "flask", mode="strict", title="predq", version=service.__version__,
    description="Asynchronous predictions from scikit-learn models.",
    security_schemes=[SecurityScheme(
        name="bearer", data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer"))],
    security={"bearer": []}, annotations=False, path="apidoc",
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
)

ERRORS = {
    400: "invalid input or malformed JSON; `field` says where",
    401: "no key, a wrong, revoked or expired key",
    403: "the key lacks the scope this needs (read, submit or admin)",
    404: "unknown, or another tenant's (the two look the same)",
    406: "none of the formats the Accept header names can be served",
    408: "the request body stalled or came too slowly",
    409: "the job is not in a state that allows this",
    413: "body too large",
    415: "not JSON",
    422: "the model failed on the input, or an Idempotency-Key was reused for another request",
    429: "the tenant's rate limit, or the queue (or the tenant's share of it), is full; "
         "see Retry-After",
    503: "a store is down; nothing was accepted",
}


def documented(ok: dict[int, Any], errors: tuple[int, ...] = (), *, public: bool = False,
               **kwargs: Any) -> Callable[[F], F]:
    """Describe a view in the OpenAPI document without wrapping it: the request path stays as
    fast as it was. `ok` maps success statuses to body models (None: no body)."""
    codes = {f"HTTP_{status}": model for status, model in ok.items()}
    always = () if public else (401, 403, 429, 503)
    codes |= {f"HTTP_{status}": (Error, ERRORS[status]) for status in {*errors, *always}}
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
    """Serve the document and the page; the spec is built once, from the app's routes."""
    spec.app = app

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(document())

    @app.get("/docs")
    def docs() -> Response:
        return Response(render(document()), mimetype="text/html")


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
    add_links(doc)
    _bulk_media(doc)
    return doc


def _describe_path_parameters(doc: dict[str, Any]) -> None:
    """Schemas for the parameters of predq's own route converters (all named after them)."""
    for operations in doc["paths"].values():
        for op in operations.values():
            for parameter in op.get("parameters", []):
                if parameter["in"] == "path" and parameter["schema"] is None:
                    parameter["schema"] = ids.SCHEMAS[parameter["name"]]


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


#: The /docs page's one inline style; the Content-Security-Policy names its hash.
DOCS_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
              "padding:0 1rem}code{background:#f3f3f3;padding:0 .2rem}")
_TEXT: dict[str, Any] = {"schema": {}}  # any body: lines of JSON, CSV text
_BINARY: dict[str, Any] = {"schema": {}}  # .npy, Parquet (OpenAPI 3.1: no schema)
BULK_QUERY = [
    ("model", "string", "bulk bodies: the model's name (required)"),
    ("version", "string", "bulk bodies: the version (default: the latest)"),
    ("priority", "string", "bulk bodies: interactive, normal, bulk (the default) or 0-9"),
    ("deadline", "string", "bulk bodies: seconds from now, or an ISO 8601 time"),
    ("webhook_url", "string", "bulk bodies: told when the job ends"),
    ("keep_inputs", "boolean", "bulk bodies: keep the input chunks once the job finishes"),
    ("retention", "number", "bulk bodies: seconds the finished job is kept"),
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


def render(doc: dict[str, Any]) -> str:
    """A plain, self-contained page (no CDN): every operation, its parameters and answers."""
    rows = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            answers = ", ".join(f"{code} {html.escape(r.get('description', ''))}"
                                for code, r in op["responses"].items())
            params = ", ".join(p["name"] for p in op.get("parameters", []))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
            rows.append(
                f"<h3><code>{method.upper()} {html.escape(path)}</code></h3>"
                f"<p>{html.escape(op.get('summary', ''))}</p>"
                f"<p>{html.escape(op.get('description', ''))}</p>"
                + (f"<p>parameters: {html.escape(params)}</p>" if params else "")
                + (f"<p>body: <code>{html.escape(ref)}</code></p>" if ref else "")
                + f"<p>answers: {answers}</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>predq API</title>"
            f"<style>{DOCS_STYLE}</style></head><body>"
            f"<h1>predq API {html.escape(doc['info']['version'])}</h1>"
            "<p>Send <code>Authorization: Bearer KEY</code>. The machine-readable description "
            "is <a href='/openapi.json'>/openapi.json</a>.</p>" + "".join(rows)
            + "</body></html>")
