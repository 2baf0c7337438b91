"""The OpenAPI document says what each operation does, with examples that hold, and lists only
the errors the API can answer; `/docs` shows it with Swagger UI served from predq's own origin."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator
from sqlalchemy import Engine

from service.api import apidocs, error_docs
from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.tenants import limits
from service.tenants.keys import SCOPES
from tests.support.browser import artifact, chromium, watched_page
from tests.support.processes import WorkerProcess
from tests.support.rollouts import Versions
from tests.support.tenants import Tenant, make_tenant

#: The operations that submit work (service/jobs/submit.py): only they wait for a queue slot
#: and count rows, so only they can answer `queue_full` (tests/realtime/test_priorities.py
#: fills a queue and sees both refuse).
SUBMITS = {("post", "/v1/jobs"), ("post", "/v1/models/{name}/predict"),
           ("post", "/v1/jobs/{job_id}/retry")}
PATH_VALUES = {"job_id": str(uuid.uuid4()), "name": "iris", "version": "1",
               "endpoint_id": "we_" + "0" * 32, "prefix": "pq_0000000"}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


@pytest.fixture(scope="module")
def document(api_url: str) -> dict[str, Any]:
    return requests.get(api_url + "/openapi.json", timeout=10).json()  # type: ignore[no-any-return]


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of `schema` whose `#/components/...` references resolve in `document`."""
    return Draft202012Validator({**schema, "components": document["components"]})


def schema_examples(document: dict[str, Any], media: dict[str, Any]) -> list[Any]:
    """The examples of a media type: its own, and its schema's (through one $ref)."""
    schema = media.get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    found = [e["value"] for e in media.get("examples", {}).values()]
    found += [media["example"]] if "example" in media else []
    return found + list(schema.get("examples", []))


# --- what the document says ------------------------------------------------------------------


def test_every_operation_says_what_it_does_and_what_its_parameters_mean(
    document: dict[str, Any],
) -> None:
    placeholder = re.compile(r"^\w+ <[A-Z]+>$")  # spectree's summary for a view without one
    for method, path, op in operations(document):
        where = f"{method.upper()} {path}"
        assert op["summary"] and not placeholder.match(op["summary"]), where
        assert len(op["summary"]) <= 60, f"{where}: a summary is a title, not a paragraph"
        description = op["description"]
        assert len(description) >= 80 and description != op["summary"], where
        assert description.rstrip().endswith((".", ")")), f"{where}: {description!r}"
        for parameter in op.get("parameters", []):
            assert parameter.get("description"), f"{where}: {parameter['name']}"


def test_every_error_answer_names_its_codes_with_an_example_of_each(
    document: dict[str, Any],
) -> None:
    error = validator(document, {"$ref": "#/components/schemas/Error"})
    for method, path, op in operations(document):
        for status, answer in op["responses"].items():
            if int(status) < 400 or answer["content"]["application/json"]["schema"] != \
                    {"$ref": "#/components/schemas/Error"}:
                continue
            codes = error_docs.codes(answer["description"])
            assert codes, f"{method.upper()} {path} {status} names no error code"
            examples = answer["content"]["application/json"]["examples"]
            assert list(examples) == codes
            for example in examples.values():
                error.validate(example["value"])


def test_every_request_body_has_examples_valid_against_its_schema(
    document: dict[str, Any],
) -> None:
    bodies = 0
    for method, path, op in operations(document):
        media = op.get("requestBody", {}).get("content", {}).get("application/json")
        if media is None:
            continue
        bodies += 1
        examples = schema_examples(document, media)
        assert examples, f"{method.upper()} {path} has no example body"
        check = validator(document, media["schema"])
        for example in examples:
            check.validate(example)
    assert bodies >= 4  # submit, predict, webhook endpoint, key


@pytest.mark.parametrize("name", ["Job", "JobAccepted", "Result", "Error"])
def test_the_answer_examples_are_valid_against_their_schema(
    document: dict[str, Any], name: str,
) -> None:
    schema = document["components"]["schemas"][name]
    assert schema["examples"]
    check = validator(document, {"$ref": f"#/components/schemas/{name}"})
    for example in schema["examples"]:
        check.validate(example)


@pytest.fixture
def admin(engine: Engine, api_url: str, models: dict[str, ModelInfo]) -> Iterator[Tenant]:
    yield from make_tenant(engine, api_url, SCOPES)


def test_the_live_api_accepts_every_request_body_example(
    document: dict[str, Any], admin: Tenant, worker: WorkerProcess, settings: Settings,
    models: dict[str, ModelInfo], versions: Versions,
) -> None:
    """Valid against the schema is not enough: each example is a request that works (the
    file a job by reference names is put in the tenant's directory first; a rollout's, on a
    model of two versions)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from service.bulk.areas import tenant_dir

    nightly = Path(settings.data_root) / tenant_dir(admin.name) / "nightly"
    nightly.mkdir(parents=True, exist_ok=True)
    rows = np.random.default_rng(1).uniform(1, 5, (50, 4))
    pq.write_table(pa.table({name: rows[:, i] for i, name in
                             enumerate(models["iris"].feature_names)}), nightly / "rows.parquet")
    ended = admin.submit("iris", [[5.1, 3.5, 1.4, 0.2]])  # a retry's original
    assert admin.wait(ended)["status"] == "succeeded"
    for method, path, op in operations(document):
        media = op.get("requestBody", {}).get("content", {}).get("application/json")
        values = {**PATH_VALUES, "job_id": ended} if path.endswith("/retry") else PATH_VALUES
        if path.endswith("/rollout"):
            values = {**PATH_VALUES, "name": versions.name}
        for example in schema_examples(document, media) if media else []:
            answer = admin.http.request(method, admin.base_url + path.format(**values),
                                        json=example, timeout=30)
            assert answer.status_code in (200, 201, 202), (path, example, answer.text)


def test_429_is_documented_exactly_where_it_can_be_answered(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        refused = op["responses"].get("429")
        authenticated = op.get("security", document["security"]) != []
        # The request-rate hook counts every authenticated call (service/api/quotas.py).
        assert (refused is not None) == authenticated == path.startswith("/v1/"), path
        if refused is None:
            continue
        codes = set(error_docs.codes(refused["description"]))
        expected = {"rate_limited", "queue_full"} if (method, path) in SUBMITS else \
            {"rate_limited"}
        assert codes == expected, f"{method.upper()} {path}: {codes}"
        assert refused["headers"]["Retry-After"]["required"] is True


def test_every_operation_documented_with_429_answers_it_over_the_rate_limit(
    document: dict[str, Any], tenant: Tenant, engine: Engine,
) -> None:
    """A tenant limited to one request a second: each operation documented with a 429 answers
    rate_limited (its answers are checked against the document as they come); the public
    ones are never counted."""
    with engine.begin() as conn:
        limits.set_limits(conn, tenant.name, requests_per_second=1)
    try:
        time.sleep(2.1)  # API processes re-read a tenant's limits every 2 s
        for method, path, op in operations(document):
            url = path.format(**PATH_VALUES)
            codes = []
            for _ in range(6):
                answer = tenant.http.request(method, tenant.base_url + url, json={},
                                             timeout=30)
                codes.append(answer.status_code)
                if answer.status_code == 429:
                    assert answer.json()["error"]["code"] == "rate_limited"
                    break
            assert (429 in codes) == ("429" in op["responses"]), (method, path, codes)
    finally:
        with engine.begin() as conn:
            limits.clear_limits(conn, tenant.name)


def test_a_predict_retry_of_a_cancelled_job_answers_409(tenant: Tenant) -> None:
    """409 is documented on predict: the Idempotency-Key's job ended without a result."""
    headers = {"Idempotency-Key": f"test-{uuid.uuid4()}"}
    body = {"inputs": [[1500, 0]]}  # `sleepy` sleeps 1.5 s: past the 0.1 s timeout
    first = tenant.post("/v1/models/sleepy/predict?timeout=0.1", json=body, headers=headers)
    assert first.status_code == 202, first.text
    tenant.post(f"/v1/jobs/{first.json()['id']}/cancel")  # unless it expired already
    again = tenant.post("/v1/models/sleepy/predict?timeout=0.1", json=body, headers=headers)
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] == "job_not_finished" and error["status"] in ("cancelled", "expired")


# --- the page --------------------------------------------------------------------------------


class Assets(HTMLParser):
    """The scripts and styles a page loads, and whatever it holds inline."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "style" in found:
            self.inline.append(f"style attribute on <{tag}>")
        if tag == "script":
            if found.get("src"):
                self.urls.append(str(found["src"]))
            self._in = tag
        elif tag == "link" and found.get("rel") in ("stylesheet", "icon"):
            self.urls.append(str(found["href"]))
        elif tag == "style":
            self._in = tag

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(f"<{self._in}> {data.strip()[:40]}")

    def handle_endtag(self, tag: str) -> None:
        self._in = None


CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def test_docs_loads_every_script_and_style_from_its_own_origin(api_url: str) -> None:
    page = requests.get(api_url + "/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy
    assets = Assets()
    assets.feed(page.text)
    assert assets.inline == []
    assert "/static/apidocs.js" in assets.urls and len(assets.urls) >= 5
    for url in assets.urls:
        assert url.startswith("/") and not url.startswith("//"), url  # this origin
        answer = requests.get(api_url + url, timeout=10)
        assert answer.status_code == 200, url
        suffix = url[url.rindex("."):]
        assert CONTENT_TYPES[suffix] in answer.headers["Content-Type"], url
        if url.startswith(apidocs.ASSETS):  # versioned: cached for a year
            assert "max-age=31536000, immutable" in answer.headers["Cache-Control"]


@pytest.mark.parametrize("path", [
    f"{apidocs.ASSETS}/index.html",  # in the package, not on the list
    f"{apidocs.ASSETS}/..%2F__init__.py",
    "/docs/swagger-ui/0.0.1/swagger-ui.css",  # another release than the one installed
])
def test_nothing_else_of_the_package_is_served(api_url: str, path: str) -> None:
    answer = requests.get(api_url + path, timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_docs_renders_every_operation_and_tries_one_with_the_key(
    browser: Any, document: dict[str, Any], tenant: Tenant, api_url: str,
) -> None:
    with watched_page(browser) as (page, console):
        page.goto(f"{api_url}/docs")
        page.wait_for_selector(".opblock")
        assert page.locator(".opblock").count() == sum(1 for _ in operations(document))
        assert page.locator(".opblock-summary-description", has_text="Get a job's result") \
            .count() == 1

        page.click("button.authorize")
        page.fill(".auth-container input[type=text]", tenant.key)
        page.click(".auth-btn-wrapper button.authorize")
        page.click(".auth-btn-wrapper button.btn-done")

        models = page.locator("#operations-models-get__v1_models")
        models.locator(".opblock-summary").click()
        models.locator("button.try-out__btn").click()
        models.locator("button.execute").click()
        status = models.locator(".live-responses-table tr.response td.response-col_status").first
        status.wait_for()
        assert status.inner_text().strip() == "200"
        assert "iris" in models.locator(".live-responses-table").inner_text()
        page.screenshot(path=str(artifact("docs.png")), full_page=False)
        assert console.errors == []


def test_an_expanded_submit_is_short_and_the_workers_are_not_under_health(
    browser: Any, document: dict[str, Any], api_url: str,
) -> None:
    assert document["paths"]["/v1/workers"]["get"]["tags"] == ["operations"]
    query = {p["name"]: p["description"]
             for p in document["paths"]["/v1/jobs"]["post"]["parameters"] if p["in"] == "query"}
    assert all("bulk body" in text and "JSON" in text for text in query.values()), query
    with watched_page(browser) as (page, console):
        page.goto(f"{api_url}/docs")
        submit = page.locator("#operations-jobs-post__v1_jobs")
        submit.locator(".opblock-summary").click()
        submit.locator(".opblock-body").wait_for()
        height = submit.evaluate("op => op.getBoundingClientRect().height")
        assert height < 4500, height  # was 6,500 px here: 16 link blocks, 12 media pickers
        assert submit.locator(".response-col_links .operation-link").count() == 16  # kept
        page.screenshot(path=str(artifact("docs-submit.png")), full_page=False)
        assert console.errors == []
