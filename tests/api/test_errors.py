"""Every bad request gets a JSON error naming the problem: never HTML, never a 500."""

import pytest
import requests
from sqlalchemy import Engine

from service.core.settings import Settings
from tests.support.tenants import Tenant, make_tenant


def _error(response: requests.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"model": "iris", "inputs": [[1, 2, 3]]}, "inputs[0]", "expects 4"),
        ({"model": "iris", "inputs": [{"sepal_length": 1, "sepal_width": 1, "petal_length": 1,
                                       "petal_widht": 1}]}, "inputs[0].petal_widht", "unknown"),
        ({"model": "iris", "inputs": [[1, 2, 3, "4"]]}, "inputs[0][3]", "number"),
        ({"model": "iris"}, "inputs", "required"),
        ({"inputs": [[1, 2, 3, 4]]}, "model", "required"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "colour": 3}, "colour", "unknown field"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "priority": "urgent"}, "priority",
         "interactive, normal, bulk"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "priority": 10}, "priority", "0 to 9"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "priority": True}, "priority", "0 to 9"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "deadline": -5}, "deadline", "positive"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "deadline": "2020-01-01T00:00:00Z"},
         "deadline", "in the past"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "deadline": "2099-01-01T00:00:00"},
         "deadline", "timezone"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "deadline": "tomorrow"}, "deadline",
         "ISO 8601"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "deadline": 1e9}, "deadline", "30 days"),
        # In UTC this is past the year 9999: Python's datetime overflows.
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "deadline": "9999-12-31T23:59:59-23:59"},
         "deadline", "30 days"),
        ({"model": "iris", "inputs": [[1, 2, 3, 4]], "retention": 5}, "retention",
         "between 60 seconds and 10 years"),
    ],
)
def test_invalid_inputs_answer_400_naming_the_field(
    tenant: Tenant, body: dict[str, object], field: str, words: str
) -> None:
    error = _error(tenant.post("/v1/jobs", json=body), 400, "invalid_input")
    assert error["field"] == field
    assert words in error["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_answer_400(tenant: Tenant, literal: str) -> None:
    body = '{"model": "iris", "inputs": [[1, 2, 3, ' + literal + ']]}'
    response = tenant.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    error = _error(response, 400, "invalid_input")
    assert error["field"] == "inputs[0][3]" and "finite" in error["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [('{"model": "iris", "inputs": [[1, 2', "line 1 column"), ("[1, 2]", "JSON object"),
     (b"\xff\xfe", "UTF-8"), ("", "malformed JSON"),
     ("[" * 100_000, "nested 100000 levels deep; at most 32"),
     ('{"model": "iris", "inputs": ' + "[" * 40 + "]" * 40 + "}", "41 levels deep")],
)
def test_malformed_json_answers_400(tenant: Tenant, body: str | bytes, words: str) -> None:
    response = tenant.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    assert words in _error(response, 400, "malformed_json")["message"]


HUGE = "9" * 5000  # Python refuses to convert integers of more than 4,300 digits


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/jobs", '{"model": "iris", "inputs": [[1, 2, 3, ' + HUGE + ']]}'),
    ("/v1/models/iris/predict", '{"inputs": [[1, 2, 3, ' + HUGE + ']]}'),
    ("/v1/jobs", '{"model": "iris", "inputs": [[1, 2, 3, 4]], "priority": ' + HUGE + '}'),
    ("/v1/keys", '{"scopes": ["read"], "expires_in": ' + HUGE + '}'),
])
def test_an_integer_of_thousands_of_digits_answers_400(
    engine: Engine, api_url: str, path: str, body: str
) -> None:
    tenants = make_tenant(engine, api_url, ("submit", "read", "admin"))
    admin = next(tenants)
    response = admin.post(path, data=body, headers={"Content-Type": "application/json"})
    assert "4300" in _error(response, 400, "malformed_json")["message"]
    for _ in tenants:
        pass


def test_an_integer_of_thousands_of_digits_in_an_ndjson_body_names_its_row(
    tenant: Tenant,
) -> None:
    body = "[1, 2, 3, 4]\n[1, 2, 3, " + HUGE + "]\n"
    response = tenant.post("/v1/jobs?model=iris", data=body,
                           headers={"Content-Type": "application/x-ndjson"})
    error = _error(response, 400, "invalid_input")
    assert error["field"] == "row 2" and "not a JSON value" in error["message"]


def test_brackets_inside_strings_do_not_count_as_nesting(tenant: Tenant) -> None:
    body = '{"model": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"[[[", "inputs": [[1]]}'
    _error(tenant.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"}),
           404, "model_not_found")


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"model": "m" * 1001, "inputs": [[1, 2, 3, 4]]}, "model", "1001 characters; at most 1000"),
    ({"model": "iris", "inputs": [[1, 2, 3, 4]], "deadline": "9" * 5000}, "deadline",
     "at most 1000"),
    ({"model": "iris", "inputs": [{"x" * 1001: 1}]}, "inputs[0]", "feature name of 1001"),
    ({"model": "iris", "inputs": [[1, 2, 3, 4]], "x" * 5000: 1}, "x" * 100, "unknown field"),
    ({"model": "iris", "inputs": [[1] * 20_000]}, "inputs[0]", "has 20000 features"),
])
def test_long_strings_and_wide_rows_answer_400_without_echoing_them(
    tenant: Tenant, body: dict[str, object], field: str, words: str
) -> None:
    error = _error(tenant.post("/v1/jobs", json=body), 400, "invalid_input")
    assert error["field"] == field
    assert words in error["message"]
    assert len(error["message"]) < 3000


def test_unknown_model_or_version_answers_404(tenant: Tenant) -> None:
    error = _error(tenant.post("/v1/jobs", json={"model": "nope", "inputs": [[1]]}),
                   404, "model_not_found")
    assert "'nope'" in error["message"]
    error = _error(tenant.post("/v1/jobs", json={"model": "iris", "version": "9",
                                                  "inputs": [[1, 2, 3, 4]]}),
                   404, "model_not_found")
    assert error["field"] == "version" and "'9'" in error["message"]
    _error(tenant.get("/v1/models/nope"), 404, "model_not_found")


NUL_CASES = [
    ("GET", "/v1/jobs/a%00b/result", None, 404, "job_not_found"),
    ("DELETE", "/v1/jobs/a%00b", None, 404, "job_not_found"),
    ("GET", "/v1/models/a%00b", None, 404, "model_not_found"),
    ("GET", "/v1/models/iris/versions/1%00", None, 404, "model_not_found"),
    ("POST", "/v1/jobs", {"model": "a\x00b", "inputs": [[1, 2, 3, 4]]}, 404, "model_not_found"),
    ("POST", "/v1/models/iris/predict", {"version": "1\x00", "inputs": [[1, 2, 3, 4]]}, 404,
     "model_not_found"),
    ("POST", "/v1/jobs", {"model": "iris", "inputs": [[1, 2, 3, 4]],
                          "webhook_url": "https://example.com/\x00"}, 400,
     "unsafe_webhook_target"),
    ("POST", "/v1/webhooks", {"url": "https://example.com/\x00"}, 400, "unsafe_webhook_target"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), NUL_CASES)
def test_a_nul_character_is_refused_before_it_reaches_sql(
    tenant: Tenant, method: str, path: str, body: object, status: int, code: str
) -> None:
    """PostgreSQL cannot hold a NUL in text: such a lookup answered 503 "store unavailable", and
    such a webhook_url failed every job committed in its group."""
    response = tenant.http.request(method, tenant.base_url + path, json=body, timeout=30)
    _error(response, status, code)


def test_wrong_content_type_answers_415(tenant: Tenant) -> None:
    response = tenant.post("/v1/jobs", data="a,b", headers={"Content-Type": "text/plain"})
    _error(response, 415, "unsupported_media_type")


def test_body_over_the_limit_answers_413(tenant: Tenant, settings: Settings,
                                         live_server) -> None:  # type: ignore[no-untyped-def]
    small = live_server(settings.replace(max_body_bytes=2000))
    body = {"model": "iris", "inputs": [[1.0, 2.0, 3.0, 4.0]] * 200}
    response = tenant.http.post(small.url + "/v1/jobs", json=body, timeout=10)
    assert "2000 bytes" in _error(response, 413, "payload_too_large")["message"]


def test_too_many_rows_answer_400(tenant: Tenant, settings: Settings,
                                  live_server) -> None:  # type: ignore[no-untyped-def]
    small = live_server(settings.replace(max_rows_per_job=5))
    body = {"model": "iris", "inputs": [[1.0, 2.0, 3.0, 4.0]] * 6}
    response = tenant.http.post(small.url + "/v1/jobs", json=body, timeout=10)
    assert "at most 5" in _error(response, 400, "invalid_input")["message"]


def test_unknown_route_and_method_answer_json(tenant: Tenant) -> None:
    _error(tenant.get("/v1/nothing-here"), 404, "not_found")
    response = tenant.http.put(tenant.base_url + "/v1/jobs", timeout=10)
    _error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
