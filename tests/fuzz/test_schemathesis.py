"""Generated requests from /openapi.json against the live API (real worker, Redis and SQL), with
every schemathesis check on: no 5xx, every answer as documented, auth never ignored.

PREDQ_FUZZ_EXAMPLES sets the examples per operation and the stateful scenarios."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import hypothesis
import schemathesis
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import Case
from schemathesis.errors import FailureGroup

from service.api import create_app
from service.api.openapi import document
from service.core.settings import Settings
from tests.fuzz.conftest import EXAMPLES, SENT
from tests.support.tenants import Tenant


def _document() -> dict[str, Any]:
    """The OpenAPI document, from the routes of an app that connects to nothing: pytest collects
    one test per operation before any server runs."""
    app = create_app(Settings.from_env({}, database_url="sqlite://",
                                       redis_url="redis://127.0.0.1:1/0"))
    with app.app_context():
        return document()


#: schemathesis' default statuses for schema-valid data, and 400 too where validity depends on
#: what a static schema cannot hold: rows must fit the named model's features, a deadline must be
#: in the future, a webhook target public; and 422: a model may fail on valid numbers (`fragile`
#: takes the square root of its inputs), and an Idempotency-Key may be reused.
SEMANTIC_400 = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]

CONFIG = {
    "request-timeout": 60,
    # The suite's short run is the same every time (a CI run must not pass or fail by luck);
    # `make fuzz` (PREDQ_FUZZ_EXAMPLES set) explores anew each time.
    "generation": {"max-examples": EXAMPLES, "database": "none",
                   "deterministic": "PREDQ_FUZZ_EXAMPLES" not in os.environ},
    # Registered models half of the time, so requests get past the model lookup. Submissions
    # name 4-feature models only, which keeps the spec's examples valid. Not `sleepy`: its first
    # feature is a sleep in ms, which would only park the shared worker.
    "dictionaries": {"models": {"values": ["iris", "diabetes", "fragile"]},
                     "4-features": {"values": ["iris", "fragile"]}},
    "parameters": {
        "path.name": {"dictionary": "models", "probability": 0.5},
        "body.model": {"dictionary": "4-features", "probability": 0.5},
    },
    "operations": [
        {"include-operation-id": ["post__v1_jobs", "post__v1_models_{name}_predict",
                                  "post__v1_webhooks"],
         "checks": {"positive_data_acceptance": {"expected-statuses": SEMANTIC_400}}},
        # DELETE /v1/jobs/{id} cancels: the job stays readable, as `cancelled`, by design (a
        # client learns how it ended). use_after_free would take a read after it for a bug.
        {"include-path-regex": "^/v1/jobs/\\{job_id\\}",
         "checks": {"use_after_free": {"enabled": False}}},
    ],
}
schema = schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_dict(CONFIG))


KEY = "Bearer fuzzing-tenant-key"


@schema.auth(refresh_interval=None)
class Bearer:
    """Marks the requests that carry the tenant's key: the cases of the examples and coverage
    phases are made while pytest collects, before the tenant exists, so `with_key` puts the key
    in just before sending. The checks remove or spoil it to probe auth."""

    def get(self, case: Case, ctx: schemathesis.AuthContext) -> str:
        return KEY

    def set(self, case: Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": data}


def with_key(case: Case, tenant: Tenant) -> None:
    if case.headers and case.headers.get("Authorization") == KEY:
        case.headers["Authorization"] = f"Bearer {tenant.key}"


@schema.parametrize()
def test_every_operation_answers_as_documented(case: Case, fuzz_tenant: Tenant) -> None:
    SENT[case.meta.phase.name.value if case.meta else "explicit"] += 1
    with_key(case, fuzz_tenant)
    case.call_and_validate(base_url=fuzz_tenant.base_url)


def test_linked_workflows_answer_as_documented(fuzz_tenant: Tenant) -> None:
    """Submit, then follow the links: status, result, cancel, deliveries; create a webhook
    endpoint, then read, rotate and delete it."""
    failures: dict[str, str] = {}
    scenarios = 0

    class Workflows(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            nonlocal scenarios
            scenarios += 1

        def before_call(self, case: Case) -> None:
            with_key(case, fuzz_tenant)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": fuzz_tenant.base_url}

        def after_call(self, response: schemathesis.Response, case: Case) -> None:
            SENT["stateful"] += 1
            super().after_call(response, case)

        def validate_response(self, response: schemathesis.Response, case: Case,
                              *args: Any, **kwargs: Any) -> None:
            # Collected, not raised: Hypothesis would replay the scenario to shrink it, and a
            # live API does not answer a replay the same way.
            try:
                super().validate_response(response, case, *args, **kwargs)
            except FailureGroup as exc:
                for failure in exc.exceptions:
                    failures.setdefault(f"{case.operation.label}: {failure.title}", str(exc))

    for _ in range(10):
        # Earlier scenarios change the API's state, so a prefix Hypothesis knows may draw
        # differently: it stops the run as flaky, and a fresh run goes on.
        with contextlib.suppress(FlakyStrategyDefinition):
            Workflows.run(settings=hypothesis.settings(
                max_examples=EXAMPLES - scenarios, stateful_step_count=10, database=None,
                deadline=None, phases=[hypothesis.Phase.generate]))
        if scenarios >= EXAMPLES:
            break
    assert not failures, "\n\n".join(failures.values())
