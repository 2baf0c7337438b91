"""The Arrow IPC reader on its own: the stream and the file format, its schema checked before
any batch is read, batches of any size cut into chunks, and a bound on one message."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from service.bulk import arrowguard, columnar, parsing
from service.core.errors import InvalidInput
from tests.bulk.test_formats import IRIS, ROWS

BOUNDS = parsing.Bounds(chunk_rows=2, max_rows=100)


def arrow(columns: dict[str, Any], file: bool = False, **options: Any) -> bytes:
    table = pa.table(columns)
    out = io.BytesIO()
    opener = pa.ipc.new_file if file else pa.ipc.new_stream
    with opener(out, table.schema, options=pa.ipc.IpcWriteOptions(**options)) as writer:
        writer.write_table(table, max_chunksize=3)
    return out.getvalue()


def read(body: bytes, bounds: parsing.Bounds = BOUNDS) -> list[np.ndarray]:
    return list(columnar.arrow_chunks(io.BytesIO(body), IRIS, bounds))


def features(**extra: Any) -> dict[str, Any]:
    return {**extra, **{n: ROWS[:, i] for i, n in reversed(list(enumerate(IRIS.feature_names)))}}


@pytest.mark.parametrize("options", [{}, {"file": True}, {"compression": "zstd"}])
def test_the_stream_the_file_format_and_compressed_batches_are_read(options: Any) -> None:
    body = arrow(features(row_id=np.arange(5), label=list("abcde")), **options)
    got = read(body)
    assert [len(m) for m in got] == [2, 2, 1] and np.array_equal(np.concatenate(got), ROWS)


def test_integer_columns_are_numbers() -> None:
    body = arrow({**features(), "petal_width": pa.array([1, 2, 3, 4, 5], pa.int8())})
    assert np.concatenate(read(body))[:, 3].tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("change", "words"), [
    ({"petal_width": None}, "missing column 'petal_width'"),
    ({"petal_width": list("abcde")}, "column 'petal_width' holds string, not numbers"),
    ({"petal_width": [True] * 5}, "column 'petal_width' holds bool, not numbers"),
])
def test_a_missing_or_non_numeric_column_is_named(change: dict[str, Any], words: str) -> None:
    columns = {k: v for k, v in {**features(), **change}.items() if v is not None}
    with pytest.raises(InvalidInput) as refused:
        read(arrow(columns))
    assert refused.value.field == "header" and refused.value.reason == words


def test_a_null_is_named_by_its_row() -> None:
    body = arrow({**features(), "sepal_width": pa.array([1.0, 2.0, 3.0, None, 5.0])})
    with pytest.raises(InvalidInput) as refused:
        read(body)
    assert refused.value.field == "row 4" and "no nulls" in refused.value.reason


@pytest.mark.parametrize(("body", "words"), [
    (b"", "not an Arrow IPC stream"), (b"PAR1 not arrow at all", "not an Arrow IPC stream"),
])
def test_what_is_not_arrow_is_refused(body: bytes, words: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        read(body)
    assert refused.value.field == "inputs" and words in refused.value.reason


def test_too_many_rows_and_too_large_a_batch_are_refused(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    with pytest.raises(InvalidInput) as refused:
        read(arrow(features()), parsing.Bounds(chunk_rows=2, max_rows=4))
    assert refused.value.field == "inputs" and "more than 4 rows" in refused.value.reason
    monkeypatch.setattr(arrowguard, "ARROW_MESSAGE", 100)  # a batch of 3 rows is 4 * 24 bytes
    with pytest.raises(InvalidInput) as refused:  # plus padding: over 100 bytes
        read(arrow(features()))
    assert "at most 100: write smaller record batches" in refused.value.reason


def test_a_compressed_batch_is_refused_by_its_decoded_size_before_it_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ZSTD batch of a million constant rows is a few KiB on the wire and 8 MB a column
    decoded: its size is read from the buffers' prefixes, and refused over the bound."""
    import pyarrow as pa

    constant = pa.table({name: pa.array(np.full(1_000_000, 1.5)) for name in IRIS.feature_names})
    body = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(body, constant.schema, options=options) as writer:
        writer.write_table(constant)
    assert len(body.getvalue()) < 100_000
    monkeypatch.setattr(arrowguard, "MAX_DECODED", 4 * 1024 * 1024)
    with pytest.raises(InvalidInput) as refused:
        read(body.getvalue(), parsing.Bounds(chunk_rows=1000, max_rows=10_000_000))
    assert "32,000,000 bytes decoded; at most 4,194,304" in refused.value.reason


def test_the_guard_reads_the_record_batch_header_as_pyarrow_wrote_it() -> None:
    import pyarrow as pa

    table = pa.table({"a": pa.array([1.0, 2.0, 3.0]), "s": pa.array(["x", "y", "x"])})
    body = io.BytesIO()
    with pa.ipc.new_stream(body, table.schema) as writer:
        writer.write_table(table)
    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(body.getvalue()))
    reader.read_next_message()  # the schema
    message = reader.read_next_message()
    kind, length, batch = arrowguard.parse_message(message.metadata.to_pybytes())
    assert (kind, length) == (arrowguard.RECORD_BATCH, message.body.size)
    assert batch is not None and batch.length == 3 and not batch.compressed
    assert batch.decoded_size(message.body.to_pybytes()) <= message.body.size
