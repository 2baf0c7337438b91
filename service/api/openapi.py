"""The OpenAPI 3.1 description, generated from the views' own declarations (spectree):
`/openapi.json`, and a readable page at `/docs`."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, jsonify
from spectree import Response as Responses
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.metadata import register_validated_function
from spectree.models import SecureType

import service
from service.api.schemas import Error

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
    401: "no key, a wrong key or a revoked key",
    404: "unknown, or another tenant's (the two look the same)",
    409: "the job is not in a state that allows this",
    413: "body too large",
    415: "not JSON",
    422: "the model failed on the input",
    429: "the queue, or the tenant's share of it, is full; see Retry-After",
    503: "a store is down; nothing was accepted",
}


def documented(ok: dict[int, Any], errors: tuple[int, ...] = (), *, public: bool = False,
               **kwargs: Any) -> Callable[[F], F]:
    """Describe a view in the OpenAPI document without wrapping it: the request path stays as
    fast as it was. `ok` maps success statuses to body models (None: no body)."""
    codes = {f"HTTP_{status}": model for status, model in ok.items()}
    always = () if public else (401, 503)
    codes |= {f"HTTP_{status}": (Error, ERRORS[status]) for status in (*errors, *always)}
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


def document() -> dict[str, Any]:
    global _document
    if _document is None:
        doc = spec.spec
        # spectree documents a 422 for its own request validation, which predq does not use
        # (its views name the exact field in a 400): drop it where the view did not declare one.
        for operations in doc["paths"].values():
            for op in operations.values():
                answer = op["responses"].get("422", {})
                if "ValidationError" in json.dumps(answer):
                    del op["responses"]["422"]
        schemas = doc["components"]["schemas"]
        for name in [n for n in schemas if n.startswith("ValidationError")]:
            del schemas[name]
        _document = doc
    return _document


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
            "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
            "padding:0 1rem}code{background:#f3f3f3;padding:0 .2rem}</style></head><body>"
            f"<h1>predq API {html.escape(doc['info']['version'])}</h1>"
            "<p>Send <code>Authorization: Bearer KEY</code>. The machine-readable description "
            "is <a href='/openapi.json'>/openapi.json</a>.</p>" + "".join(rows)
            + "</body></html>")
