"""The data root belongs to tenants: each names files in its own directory, reads the prefixes
the operator shares with it, and can neither read, probe nor overwrite anyone else's file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from service.bulk.areas import tenant_dir
from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.bulk.test_bulk_api import iris_rows
from tests.bulk.test_by_reference import expected
from tests.support.dataroot import refused, remove_tree, submit, tenant_home
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant, make_tenant

SHARED = f"shared-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(
        bulk_chunk_rows=100, bulk_ref_chunk_rows=300,
        data_shared=f"*={SHARED}/all,someone-else={SHARED}/private"))
    yield live
    live.stop()


@pytest.fixture
def root(settings: Settings, client: Tenant) -> Iterator[Path]:
    yield from tenant_home(settings, client.name)


@pytest.fixture
def other(engine: Engine, server: LiveServer, settings: Settings) -> Iterator[Tenant]:
    """A second tenant with a directory and an input of its own."""
    for tenant in make_tenant(engine, server.url):
        for home in tenant_home(settings, tenant.name):
            np.save(home / "rows.npy", iris_rows(50, seed=40))
            yield tenant


@pytest.fixture
def shared(settings: Settings) -> Iterator[Path]:
    here = Path(settings.data_root) / SHARED
    for part in ("all", "private"):
        (here / part).mkdir(parents=True, exist_ok=True)
        np.save(here / part / "rows.npy", iris_rows(120, seed=41))
    yield here
    remove_tree(here)


def test_safe_tenant_names_are_their_directory_and_the_rest_are_mapped() -> None:
    assert tenant_dir("acme") == "acme" and tenant_dir("a.b_c-9") == "a.b_c-9"
    mapped = [tenant_dir(name) for name in (".", "..", "a/b", "-rf", ".hidden", "_x", "x" * 65,
                                            "caf\u00e9", "")]
    assert all(name.startswith("_") and len(name) == 33 for name in mapped)
    assert len(set(mapped)) == len(mapped)  # one directory each


def test_another_tenants_files_can_be_neither_read_nor_probed(
    client: Tenant, other: Tenant, root: Path, settings: Settings
) -> None:
    """Tenant B names A's input as it lies under the root: it is looked for in B's own
    directory, and B learns nothing from the answer (the same as for a file nobody has)."""
    theirs = tenant_dir(other.name)
    found = refused(client, input=f"{theirs}/rows.npy")
    missing = refused(client, input=f"{theirs}/nothing.npy")
    assert found["message"] == f"input: '{theirs}/rows.npy': no such file"
    assert missing["message"] == f"input: '{theirs}/nothing.npy': no such file"
    assert "'..'" in refused(client, input=f"../{theirs}/rows.npy")["message"]
    os.symlink(Path(settings.data_root) / theirs / "rows.npy", root / "theirs.npy")
    assert "leads outside your directory" in refused(client, input="theirs.npy")["message"]
    np.save(root / "mine.npy", iris_rows(10))
    error = refused(client, input="mine.npy", output=f"../{theirs}/stolen.csv")
    assert error["field"] == "output"
    assert not (Path(settings.data_root) / theirs / "stolen.csv").exists()


def test_a_tenant_whose_name_is_no_safe_directory_name_gets_a_mapped_one(
    engine: Engine, server: LiveServer, settings: Settings, worker: object,
    models: dict[str, ModelInfo]
) -> None:
    """A tenant named `..` does not read the data root itself: its files are in `_<hash>`."""
    np.save(Path(settings.data_root) / "at-the-root.npy", iris_rows(10))
    try:
        for client in make_tenant(engine, server.url, name=".."):
            assert refused(client, input="at-the-root.npy")["message"].endswith("no such file")
            for home in tenant_home(settings, ".."):
                assert home.name == tenant_dir("..") and home.parent == Path(settings.data_root)
                np.save(home / "rows.npy", iris_rows(30, seed=42))
                job = submit(client, input="rows.npy")
                assert client.wait(str(job["id"]), timeout=60)["status"] == "succeeded"
    finally:
        (Path(settings.data_root) / "at-the-root.npy").unlink()


def test_a_shared_prefix_is_readable_by_the_tenants_it_is_granted_to_only(
    client: Tenant, root: Path, shared: Path, worker: object, models: dict[str, ModelInfo]
) -> None:
    import pyarrow.parquet as pq

    job = submit(client, input=f"@{SHARED}/all/rows.npy", output="from-shared.parquet")
    assert client.wait(str(job["id"]), timeout=60)["status"] == "succeeded"
    written = pq.read_table(root / "from-shared.parquet").column("prediction").to_pylist()
    assert written == expected(models, iris_rows(120, 41))
    error = refused(client, input=f"@{SHARED}/private/rows.npy")
    assert error["field"] == "input" and "no prefix of the data root is shared" in \
        error["message"]
    assert "'..'" in refused(client, input=f"@{SHARED}/all/../private/rows.npy")["message"]
    error = refused(client, input=f"@{SHARED}/all/rows.npy",
                    output=f"@{SHARED}/all/out.parquet")
    assert error["field"] == "output" and "read only" in error["message"]


def test_files_with_a_second_hard_link_are_refused(
    client: Tenant, root: Path, tmp_path: Path
) -> None:
    """A hard link placed in a tenant's directory to a file elsewhere is not followed."""
    outside = tmp_path / "elsewhere.npy"
    np.save(outside, iris_rows(10))
    try:
        os.link(outside, root / "linked.npy")
    except OSError:
        pytest.skip("the data root and the temporary directory are on different devices")
    error = refused(client, input="linked.npy")
    assert error["field"] == "input" and "2 hard links" in error["message"]
    np.save(root / "ok.npy", iris_rows(10))
    error = refused(client, input="ok.npy", output="linked.npy", overwrite=True)
    assert error["field"] == "output" and "hard links" in error["message"]


def test_an_over_long_name_or_a_symlink_loop_is_a_400_naming_the_field(
    client: Tenant, root: Path
) -> None:
    np.save(root / "ok.npy", iris_rows(10))
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    for body in ({"input": "x" * 256 + ".npy"}, {"input": "ok.npy", "output": "y" * 300 + ".csv"},
                 {"input": "in/" + "\u00e9" * 128 + ".npy"},  # 128 characters, 256 bytes
                 {"input": "loop-a/rows.npy"}, {"input": "ok.npy", "output": "loop-b/x.csv"},
                 {"input": "\ud800.npy"}):
        field = "output" if "output" in body else "input"
        error = refused(client, **body)
        assert error["field"] == field, (body, error)
        assert "longer than 255 bytes" in error["message"] or "loop" in error["message"] or \
            "lone surrogate" in error["message"]


def test_errors_name_files_relative_to_the_tenants_directory(
    client: Tenant, root: Path, settings: Settings, worker: object
) -> None:
    rows = iris_rows(400, seed=43)
    rows[350, 1] = np.inf
    (root / "in").mkdir()
    np.save(root / "in" / "bad.npy", rows)
    (root / "in" / "broken.parquet").write_bytes(b"PAR1 not really")
    job = submit(client, input="in/bad.npy")
    error = str(client.wait(str(job["id"]), timeout=60)["error"])
    assert "row 351 of in/bad.npy:" in error, error
    message = refused(client, input="in/broken.parquet")["message"]
    for text in (error, message):
        assert settings.data_root not in text and tenant_dir(client.name) not in text, text
