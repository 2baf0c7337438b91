"""The format registry and the bulk readers, on their own: no server, no database."""

from __future__ import annotations

import io

import numpy as np
import pytest
from werkzeug.datastructures import MIMEAccept

from service.bulk import formats, parsing
from service.core.errors import InvalidInput
from service.models.registry import ModelInfo

IRIS = ModelInfo(
    id=1, name="iris", version="1", kind="classifier", n_features=4,
    feature_names=["sepal_length", "sepal_width", "petal_length", "petal_width"],
    labels=["setosa", "versicolor", "virginica"], sha256="0" * 64, artifact_path="x",
    sklearn_version=None,
)
ROWS = np.arange(20, dtype=np.float64).reshape(5, 4) / 4 + 0.5
BOUNDS = parsing.Bounds(chunk_rows=2, max_rows=100)


@pytest.mark.parametrize(("name", "suffix", "media_type"), [
    ("csv", "x.csv", "text/csv"), ("ndjson", "x.jsonl", "application/jsonl"),
    ("npy", "X.NPY", "application/vnd.numpy"), ("parquet", "a/b.parquet", "application/x-parquet"),
    ("json", "x.json", "application/json"),
    ("arrow", "x.arrow", "application/vnd.apache.arrow.stream"),
])
def test_each_format_is_found_by_suffix_and_by_media_type(name: str, suffix: str,
                                                           media_type: str) -> None:
    assert formats.by_suffix(suffix) is formats.by_media_type(media_type)
    found = formats.by_suffix(suffix)
    assert found is not None and found.name == name


def test_json_is_written_not_read_and_unknown_names_are_none() -> None:
    assert formats.JSON not in formats.READABLE and formats.JSON in formats.WRITABLE
    assert formats.by_suffix("x.xlsx") is None and formats.by_media_type("image/png") is None
    assert formats.names(formats.READABLE) == \
        ".csv, .ndjson, .jsonl, .npy, .parquet, .arrow or .arrows"
    # The Arrow file format is read (as the stream it holds), a result is written as a stream.
    assert formats.by_media_type("application/vnd.apache.arrow.file") in formats.READABLE
    assert formats.ARROW_FILE not in formats.WRITABLE and formats.ARROW in formats.WRITABLE


def test_accept_picks_the_best_written_format_and_json_by_default() -> None:
    assert formats.choose(MIMEAccept()) is formats.JSON
    assert formats.choose(MIMEAccept([("text/csv", 1), ("application/json", 0.5)])) \
        is formats.CSV
    assert formats.choose(MIMEAccept([("application/vnd.apache.parquet", 1)])) \
        is formats.PARQUET
    assert formats.choose(MIMEAccept([("application/vnd.apache.arrow.stream", 1)])) \
        is formats.ARROW
    assert formats.choose(MIMEAccept([("image/png", 1)])) is None
    assert formats.choose(MIMEAccept([("application/vnd.apache.arrow.file", 1)])) is None


def _bodies() -> dict[str, bytes]:
    csv = "petal_width,sepal_length,sepal_width,petal_length\n" + "".join(
        f"{r[3]},{r[0]},{r[1]},{r[2]}\n" for r in ROWS.tolist())
    ndjson = "".join(f"{list(r)}\n" for r in ROWS.tolist())
    npy = io.BytesIO()
    np.save(npy, ROWS.astype(np.float32))
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = io.BytesIO()
    pq.write_table(pa.table({n: ROWS[:, i] for i, n in reversed(list(
        enumerate(IRIS.feature_names)))}), parquet)
    arrow = io.BytesIO()
    with pa.ipc.new_stream(arrow, pa.schema([(n, pa.float64()) for n in IRIS.feature_names])
                           ) as writer:  # batches of 3 rows, cut into chunks of 2
        writer.write_table(pa.table({n: ROWS[:, i] for i, n in enumerate(IRIS.feature_names)}),
                           max_chunksize=3)
    return {"csv": csv.encode(), "ndjson": ndjson.encode(), "npy": npy.getvalue(),
            "parquet": parquet.getvalue(), "arrow": arrow.getvalue()}


@pytest.mark.parametrize("name", ["csv", "ndjson", "npy", "parquet", "arrow"])
def test_every_reader_gives_the_rows_in_signature_order_in_chunks(name: str) -> None:
    fmt = formats.by_suffix(f"x.{name}")
    assert fmt is not None
    got = list(fmt.reader()(io.BytesIO(_bodies()[name]), IRIS, BOUNDS))
    assert [len(m) for m in got] == [2, 2, 1]
    assert np.array_equal(np.concatenate(got), ROWS.astype(np.float32).astype(np.float64)
                          if name == "npy" else ROWS)


@pytest.mark.parametrize("name", ["csv", "ndjson", "npy", "parquet", "arrow"])
def test_every_reader_refuses_more_rows_than_a_job_may_have(name: str) -> None:
    fmt = formats.by_suffix(f"x.{name}")
    assert fmt is not None
    with pytest.raises(InvalidInput) as refused:
        list(fmt.reader()(io.BytesIO(_bodies()[name]), IRIS,
                          parsing.Bounds(chunk_rows=2, max_rows=4)))
    assert refused.value.field == "inputs" and "4" in refused.value.reason


@pytest.mark.parametrize("shape", [(-1, 4), (0, 4), (5,), (5, 3)])
def test_a_npy_header_without_rows_of_the_models_width_is_refused_naming_its_shape(
    shape: tuple[int, ...]
) -> None:
    body = io.BytesIO()
    np.lib.format.write_array_header_1_0(body, {"descr": "<f8", "fortran_order": False,
                                                "shape": shape})
    with pytest.raises(InvalidInput) as refused:
        list(parsing.npy_chunks(io.BytesIO(body.getvalue()), IRIS, BOUNDS))
    assert f"shape {shape}" in refused.value.reason
