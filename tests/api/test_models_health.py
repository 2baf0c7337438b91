import requests

from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.support.tenants import Tenant


def test_models_list_their_signatures_and_versions(tenant: Tenant,
                                                   models: dict[str, ModelInfo]) -> None:
    listed = {m["name"]: m for m in tenant.get("/v1/models").json()["models"]}
    assert {"iris", "diabetes", "fragile"} <= set(listed)
    iris = listed["iris"]
    assert iris["kind"] == "classifier" and iris["n_features"] == 4
    assert iris["feature_names"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert iris["labels"] == ["setosa", "versicolor", "virginica"]
    assert iris["sha256"] == models["iris"].sha256 and iris["versions"] == ["1"]
    one = tenant.get("/v1/models/diabetes").json()
    assert one["kind"] == "regressor" and one["versions"][0]["version"] == "1"
    assert "labels" not in one
    assert tenant.get("/v1/models/iris/versions/1").json()["version"] == "1"


def test_healthz_and_readyz_answer_when_everything_is_up(api_url: str) -> None:
    assert requests.get(api_url + "/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(api_url + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_names_the_dependency_that_is_down(settings: Settings, live_server,
                                                  tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = live_server(settings.replace(redis_url=f"unix://{tmp_path}/no-redis.sock"))
    ready = requests.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["redis"].startswith("unavailable")
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
