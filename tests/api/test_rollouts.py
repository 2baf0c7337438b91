"""A model's rollout (issue 32): the operator, and only the operator, splits the jobs that name
no version by weight; each job's version is chosen once, at submit, by every entry point, and
every change is recorded. Shadows and the comparison: test_rollout_shadows.py. Real HTTP, a
real worker, SQLite or PostgreSQL."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine

from service.core.settings import Settings
from service.models.rollouts import Rollout, seed_of
from tests.support.processes import WorkerProcess
from tests.support.rollouts import (
    FEATURES,
    Versions,
    accepted,
    iris_rows,
    set_rollout,
)
from tests.support.tenants import Tenant, make_tenant


def test_rollout_calls_need_the_operator_scope_which_http_cannot_grant(
    engine: Engine, api_url: str, versions: Versions, ops: Tenant
) -> None:
    admin = next(make_tenant(engine, api_url, ("submit", "read", "admin")))
    paths = [f"/v1/models/{versions.name}/rollout",
             f"/v1/models/{versions.name}/rollout/history",
             f"/v1/models/{versions.name}/compare?baseline=1&candidate=2"]
    for path in paths:
        refused = admin.get(path)
        assert refused.status_code == 403, path
        assert "operator" in refused.json()["error"]["message"]
    put = admin.http.put(f"{api_url}/v1/models/{versions.name}/rollout",
                         json={"weights": {"2": 100}}, timeout=30)
    assert put.status_code == 403
    made = admin.post("/v1/keys", json={"scopes": ["read", "operator"]})
    assert made.status_code == 400 and made.json()["error"]["field"] == "scopes"
    assert "command line" in made.json()["error"]["message"]
    assert ops.get(paths[0]).status_code == 200  # the key `predq keys create` makes
    for missing in (str(uuid.uuid4()), "a%00b"):  # PostgreSQL never sees the NUL
        assert ops.get(f"/v1/jobs/{missing}/shadow").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"weights": {"1": 80, "9": 20}}, "weights.9"),
    ({"weights": {"1": 0, "2": 0}}, "weights"),
    ({"weights": {"1": -5, "2": 20}}, "weights.1"),
    ({"weights": {}}, "weights"),
    ({"weights": {"1": "most"}}, "weights.1"),
    ({"weights": {"1": 100}, "shadow": {"version": "2", "percent": 101}}, "shadow.percent"),
    ({"weights": {"1": 100}, "shadow": {"version": "2", "percent": -1}}, "shadow.percent"),
    ({"weights": {"1": 100}, "shadow": {"version": "7"}}, "shadow.version"),
    ({"weights": {"1": 50, "3": 50}}, "weights.3"),  # version 3 takes other inputs
    ({"weights": {"1": 100}, "shadow": {"version": "3"}}, "shadow.version"),
    ({"weights": {"1": 100}, "mirror": "2"}, "mirror"),
])
def test_a_bad_rollout_is_refused_naming_the_problem(
    versions: Versions, ops: Tenant, body: dict[str, Any], field: str
) -> None:
    answer = ops.http.put(f"{ops.base_url}/v1/models/{versions.name}/rollout", json=body,
                          timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    assert ops.get(f"/v1/models/{versions.name}/rollout").json()["weights"] is None


def test_weights_80_20_split_400_jobs_and_delete_returns_to_latest(
    versions: Versions, ops: Tenant, tenant: Tenant
) -> None:
    shown = set_rollout(ops, versions.name, {"weights": {"1": 80, "2": 20}})
    assert shown["shares"] == {"1": 0.8, "2": 0.2} and shown["latest"] == "3"
    assert ops.get(f"/v1/models/{versions.name}/rollout").json()["weights"] == \
        {"1": 80.0, "2": 20.0}
    listed = {m["name"]: m for m in tenant.get("/v1/models").json()["models"]}
    assert listed[versions.name]["rollout"] == {"shares": {"1": 0.8, "2": 0.2}, "shadow": None}
    assert listed["iris"]["rollout"] is None  # the dashboard's models table shows both
    got = Counter(accepted(tenant, {"model": versions.name, "inputs": [[5.1, 3.5, 1.4, 0.2]]}
                           )["version"] for _ in range(400))
    assert set(got) == {"1", "2"}
    assert 0.13 <= got["2"] / 400 <= 0.27, got
    explicit = accepted(tenant, {"model": versions.name, "version": "3",
                                 "inputs": [[5.1, 3.5, 1.4]]})
    assert explicit["version"] == "3"  # a job that names its version is not split
    cleared = ops.delete(f"/v1/models/{versions.name}/rollout")
    assert cleared.status_code == 200 and cleared.json()["weights"] is None
    after = accepted(tenant, {"model": versions.name, "inputs": [[5.1, 3.5, 1.4]]})
    assert after["version"] == "3"  # the latest registered again, at once in this process


def test_retries_keep_the_version_chosen_at_submit(
    versions: Versions, ops: Tenant, tenant: Tenant, worker: WorkerProcess
) -> None:
    weights = {"1": 50, "2": 50}
    set_rollout(ops, versions.name, {"weights": weights})
    body = {"model": versions.name, "inputs": [[6.7, 3.0, 5.2, 2.3]]}
    # Keys whose (tenant, key) hash falls on each version: the choice is the documented hash.
    split = Rollout(versions.name, weights)
    expected: dict[str, str] = {}
    while sorted(Counter(expected.values()).values()) != [3, 3]:
        key = f"k-{uuid.uuid4().hex}"
        version = split.choose(seed_of(tenant.name, key, ""))
        if Counter(expected.values())[version] < 3:
            expected[key] = version
    keyed = {key: accepted(tenant, body, key) for key in expected}
    assert {key: job["version"] for key, job in keyed.items()} == expected
    first = next(iter(keyed.values()))
    # Move every new job to the other version: a retry with its key gets its job as it was.
    for key, job in keyed.items():
        other = "2" if job["version"] == "1" else "1"
        set_rollout(ops, versions.name, {"weights": {other: 100}})
        again = tenant.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert (again.json()["id"], again.json()["version"]) == (job["id"], job["version"])
    done = tenant.wait(first["id"])
    assert done["status"] == "succeeded" and done["version"] == first["version"]
    set_rollout(ops, versions.name, {"weights": {"2" if first["version"] == "1" else "1": 100}})
    redo = tenant.post(f"/v1/jobs/{first['id']}/retry")
    assert redo.status_code == 202 and redo.json()["version"] == first["version"]


def test_every_change_is_recorded_with_who_when_from_and_to(
    versions: Versions, ops: Tenant
) -> None:
    set_rollout(ops, versions.name, {"weights": {"1": 95, "2": 5}})
    set_rollout(ops, versions.name, {"weights": {"1": 50, "2": 50},
                                     "shadow": {"version": "2", "percent": 10}})
    assert ops.delete(f"/v1/models/{versions.name}/rollout").status_code == 200
    changes = ops.get(f"/v1/models/{versions.name}/rollout/history").json()["changes"]
    assert [(c["from"], c["to"]) for c in changes] == [
        ({"weights": {"1": 50.0, "2": 50.0}, "shadow": {"version": "2", "percent": 10.0}},
         None),
        ({"weights": {"1": 95.0, "2": 5.0}, "shadow": None},
         {"weights": {"1": 50.0, "2": 50.0}, "shadow": {"version": "2", "percent": 10.0}}),
        (None, {"weights": {"1": 95.0, "2": 5.0}, "shadow": None}),
    ]
    assert all(ops.name in c["by"] and ops.key[:10] in c["by"] and c["at"] for c in changes)


def test_synchronous_predict_and_bulk_uploads_follow_the_rollout_as_whole_jobs(
    versions: Versions, ops: Tenant, tenant: Tenant, worker: WorkerProcess
) -> None:
    set_rollout(ops, versions.name, {"weights": {"2": 100}})
    rows = iris_rows(3, 7)
    answer = tenant.post(f"/v1/models/{versions.name}/predict", json={"inputs": rows})
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == "2"
    assert answer.json()["predictions"] == versions.predict("2", rows)
    csv = "\n".join(",".join(map(str, row)) for row in [FEATURES, *iris_rows(500, 8)]) + "\n"
    upload = tenant.post("/v1/jobs", params={"model": versions.name}, data=csv,
                         headers={"Content-Type": "text/csv"})
    assert upload.status_code == 202, upload.text
    assert upload.json()["version"] == "2"
    done = tenant.wait(upload.json()["id"])
    assert (done["status"], done["version"]) == ("succeeded", "2")


def test_the_command_line_sets_shows_and_clears_a_rollout(
    versions: Versions, settings: Settings, ops: Tenant
) -> None:
    import json
    import os
    import subprocess
    import sys

    from tests.support.processes import ROOT

    env = {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT)}

    def predq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", "models", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    made = predq("rollout", versions.name, "--weights", "1=80,2=20", "--shadow", "2:100")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["shadow"] == {"version": "2", "percent": 100.0}
    shown = ops.get(f"/v1/models/{versions.name}/rollout").json()
    assert shown["weights"] == {"1": 80.0, "2": 20.0}
    refused = predq("rollout", versions.name, "--weights", "1=80,9=20")
    assert refused.returncode != 0 and "weights.9" in refused.stderr
    assert json.loads(predq("rollout", versions.name, "show").stdout)["weights"] == \
        {"1": 80.0, "2": 20.0}
    cleared = predq("rollout", versions.name, "--clear")
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["weights"] is None
    history = json.loads(predq("rollout", versions.name, "history").stdout)
    assert [c["to"] is None for c in history] == [True, False]
    assert history[0]["by"].startswith("command line: ")
