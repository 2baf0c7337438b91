"""Every response the tests receive is checked against `/openapi.json` (openapi-core)."""

from __future__ import annotations

from functools import cache
from typing import Any

import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.templating.paths.exceptions import (
    OperationNotFound,
    PathNotFound,
    ServerNotFound,
)


@cache
def _api(base_url: str) -> OpenAPI:
    document = requests.get(base_url + "/openapi.json", timeout=10).json()
    document["servers"] = [{"url": base_url}]
    return OpenAPI.from_dict(document)


def check_response(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
    """A requests response hook: fail the test on a response the document does not allow.
    Requests to paths or methods the API does not have (the 404 and 405 tests) are skipped."""
    url = response.request.url or ""
    if "/v1/" not in url or response.status_code >= 500:
        return  # 5xx fail their own tests; health, docs and dashboard are not JSON API calls
    base_url = url.split("/v1/", 1)[0]
    api = _api(base_url)
    request = RequestsOpenAPIRequest(response.request)
    try:
        api.validate_response(request, RequestsOpenAPIResponse(response))
    except (PathNotFound, OperationNotFound, ServerNotFound):
        return
