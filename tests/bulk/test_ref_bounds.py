"""What a worker reads of a file by reference is bounded as an upload is (issue 29, item 3):
a CSV range at most refs.CHUNK_BYTES and no line past the model's line bound, a Parquet row
group at most refs.MAX_ROW_GROUP_BYTES decoded, refused at submit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from service.bulk import lines, refs
from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.bulk.test_bulk_api import iris_rows
from tests.support.dataroot import refused, rel, submit, tenant_home
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant

MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(bulk_chunk_rows=300))
    yield live
    live.stop()


@pytest.fixture
def root(settings: Settings, client: Tenant) -> Iterator[Path]:
    yield from tenant_home(settings, client.name)


def test_an_endless_csv_line_fails_its_job_naming_it_after_a_bounded_read(
    client: Tenant, root: Path, settings: Settings, models: dict[str, ModelInfo],
    worker: object,
) -> None:
    """Normal rows, then one line of 40 MiB: planned in ranges of at most 32 MiB, and the
    worker that meets the line reads at most its bound of it (issue 29 saw 353 MB)."""
    names = ",".join(models["iris"].feature_names)
    good = "".join(",".join(map(str, row)) + "\n" for row in iris_rows(500).tolist())
    with open(root / "long.csv", "w") as f:
        f.write(names + "\n" + good)
        for _ in range(40):
            f.write("1.0," * (MB // 4))
        f.write("1.0\n")
    job = submit(client, input=rel(root / "long.csv", settings))
    done = client.wait(str(job["id"]), timeout=120)
    assert done["status"] == "failed", done
    limit = lines.line_limit(models["iris"])
    assert f"longer than {limit:,}" in str(done["error"]), done
    assert str(settings.data_root) not in str(done["error"])


def test_a_parquet_row_group_too_large_to_read_whole_is_refused_at_submit(
    client: Tenant, root: Path, settings: Settings, models: dict[str, ModelInfo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = iris_rows(20_000)
    table = pa.table({name: rows[:, i] for i, name in enumerate(models["iris"].feature_names)})
    pq.write_table(table, root / "one-group.parquet", row_group_size=20_000)
    submit(client, input=rel(root / "one-group.parquet", settings))  # 640 KB: within bounds
    # The server runs in this process (LiveServer): a bound below this file's one group.
    monkeypatch.setattr(refs, "MAX_ROW_GROUP_BYTES", 100_000)
    error = refused(client, input=rel(root / "one-group.parquet", settings))
    assert error["field"] == "input" and error["code"] == "invalid_input"
    assert "row group 0" in error["message"] and "row_group_size" in error["message"]


def test_a_csv_without_line_ends_is_planned_in_bounded_ranges(
    root: Path, settings: Settings, models: dict[str, ModelInfo], client: Tenant,
) -> None:
    """No newline in the first 64 KiB: the rows' length cannot be estimated, and the file is
    cut into ranges of at most CHUNK_BYTES, not one (issue 29: a 1 GiB sparse file, one chunk,
    2 GB in one worker)."""
    from service.bulk.areas import Area
    from service.bulk.parsing import Bounds

    path = root / "sparse.csv"
    with open(path, "wb") as f:
        f.write(",".join(models["iris"].feature_names).encode() + b"\n")
        f.truncate(100 * MB)  # a sparse file: 100 MiB of zero bytes, no line end
    area = Area(settings.data_root, client.name)
    ref = refs.plan(area, rel(path, settings), None, models["iris"], Bounds(300, 10**7))
    assert len(ref.ranges) >= 4
    assert max(stop - start for _rows, start, stop in ref.ranges) <= refs.CHUNK_BYTES
