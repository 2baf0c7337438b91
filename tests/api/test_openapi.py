"""The OpenAPI 3.1 document describes every route; e2e responses are checked against it."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from openapi_spec_validator import validate

from service.api import openapi
from service.core.settings import Settings
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant

NOT_JSON_API = {"/openapi.json", "/docs", "/docs/swagger-ui/<release>/<name>", "/metrics", "/",
                "/static/<path:filename>"}


def test_the_document_is_valid_openapi_3_1(api_url: str) -> None:
    document = requests.get(api_url + "/openapi.json", timeout=10).json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_every_route_is_described(api_url: str) -> None:
    from service.api import create_app
    from service.core.settings import Settings

    document = requests.get(api_url + "/openapi.json", timeout=10).json()
    app = create_app(Settings.from_env({}, database_url="sqlite://",
                                       redis_url="redis://127.0.0.1:1/0"))
    missing = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        if rule.rule in NOT_JSON_API or path.startswith("/apidoc"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is None:
                missing.append(f"{method} {path}")
            else:
                assert operation["summary"], f"{method} {path} has no summary"
                assert "200" in operation["responses"] or any(
                    code.startswith("2") for code in operation["responses"])
    assert missing == []


def test_an_answer_outside_the_document_would_fail_the_check(
    tenant: Tenant, api_url: str,
) -> None:
    """The response hook on every tenant session is live: a made-up answer is refused."""
    import pytest
    from openapi_core.validation.response.exceptions import ResponseValidationError

    from tests.support.openapi_check import check_response

    response = requests.get(api_url + "/v1/models", headers=tenant.http.headers, timeout=10)
    assert response.status_code == 200
    check_response(response)  # the real answer passes
    response._content = b'{"models": [{"name": 5}]}'  # noqa: SLF001
    with pytest.raises(ResponseValidationError):
        check_response(response)


def test_concurrent_first_requests_get_one_valid_document(
    settings: Settings, live_server: type[LiveServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clients that start together ask for the document at once: they must wait for one build
    (two builds at once amended the same dict twice: every bulk parameter listed twice)."""
    server = live_server(settings)
    monkeypatch.setattr(openapi, "_document", None)  # as in a process that just started
    assert openapi.spec.spec  # spectree's own document, generated (and kept) by spectree
    barrier = threading.Barrier(16)

    def fetch(_: int) -> dict[str, object]:
        barrier.wait()
        return requests.get(server.url + "/openapi.json", timeout=30).json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(16) as pool:
        documents = list(pool.map(fetch, range(16)))
    assert all(document == documents[0] for document in documents)
    validate(documents[0])  # no duplicate parameter
    names = [p["name"] for p in documents[0]["paths"]["/v1/jobs"]["post"]["parameters"]]
    assert sorted(names) == sorted(set(names))
