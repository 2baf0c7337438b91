"""Results written in the format a client asks for (JSON, NDJSON, CSV, .npy, Parquet, Arrow),
chunk by chunk in input order, so a result of millions of rows is never held whole. Every
writer takes the same arguments; `formats` says which serves which media type and suffix."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.errors import NotAcceptable
from service.jobs.typedresults import (
    csv_cell,
    label_type,
    npy_dtype,
    probability_names,
    result_columns,
)

Chunks = Callable[[], Iterable[dict[str, Any]]]  # each call iterates the chunks from the start


@dataclass(frozen=True)
class ResultInfo:
    """What a writer needs besides the predictions."""

    n_rows: int
    labels: list[Any] | None  # a classifier's labels, in probability order; None: a regressor
    provenance: dict[str, Any]  # model, version and sha256 that produced the result


Writer = Callable[[Chunks, ResultInfo], Iterator[bytes]]


def json_body(chunks: Chunks, info: ResultInfo) -> Iterator[bytes]:
    """The same document as a small job's result: {"predictions": [...], "probabilities":
    [...], "model", "version", "sha256"}; one pass over the chunks per list."""
    keys = ["predictions"] + (["probabilities"] if info.labels is not None else [])
    yield b"{"
    for i, key in enumerate(keys):
        yield (b", " if i else b"") + json.dumps(key).encode() + b": ["
        first = True
        for chunk in chunks():
            values = _list(chunk.get(key, []))
            if values:
                text = json.dumps(values)[1:-1]
                yield (b"" if first else b", ") + text.encode()
                first = False
        yield b"]"
    yield b", " + json.dumps(info.provenance)[1:].encode()


def ndjson_body(chunks: Chunks, _info: ResultInfo) -> Iterator[bytes]:
    """One line per row: {"prediction": ..., "probabilities": [...]}."""
    for chunk in chunks():
        probabilities = _list(chunk.get("probabilities"))
        lines = []
        for i, prediction in enumerate(_list(chunk["predictions"])):
            row: dict[str, Any] = {"prediction": prediction}
            if probabilities is not None:
                row["probabilities"] = probabilities[i]
            lines.append(json.dumps(row))
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def csv_body(chunks: Chunks, info: ResultInfo) -> Iterator[bytes]:
    """A header, then one line per row: prediction (a boolean as true/false) and, for
    classifiers, p_<label> columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prediction"] + probability_names(info.labels or []))
    for chunk in chunks():
        probabilities = _list(chunk.get("probabilities"))
        for i, prediction in enumerate(_list(chunk["predictions"])):
            writer.writerow([csv_cell(prediction)]
                            + (list(probabilities[i]) if probabilities else []))
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue().encode()


def npy_body(chunks: Chunks, info: ResultInfo) -> Iterator[bytes]:
    """The predictions as one .npy array of `n_rows` (float64, or int64 for integer labels);
    the header first, then each chunk's bytes. Labels that are not numbers have no .npy form
    (`check`, before the first byte)."""
    dtype = npy_dtype(info.labels)
    assert dtype is not None, "checked before writing"
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": (info.n_rows,)})
    yield header.getvalue()  # magic string included
    for chunk in chunks():
        yield np.asarray(chunk["predictions"], dtype=dtype).tobytes()


def parquet_body(chunks: Chunks, info: ResultInfo) -> Iterator[bytes]:
    """A Parquet file: a `prediction` column and, for classifiers, `p_<label>` columns; one
    row group per chunk, each sent as soon as it is written (needs pyarrow)."""
    import pyarrow.parquet as pq

    return _columns(chunks, info, pq.ParquetWriter)


def arrow_body(chunks: Chunks, info: ResultInfo) -> Iterator[bytes]:
    """An Arrow IPC stream with Parquet's columns; one record batch per chunk, each sent as
    soon as it is written (needs pyarrow)."""
    import pyarrow as pa

    return _columns(chunks, info, pa.ipc.new_stream)


def _columns(chunks: Chunks, info: ResultInfo, open_writer: Callable[..., Any]
             ) -> Iterator[bytes]:
    """A columnar writer (`open_writer(sink, schema)`) fed a table per chunk."""
    import pyarrow as pa

    sink = _Sink()
    writer = None
    try:
        for chunk in chunks():
            table = pa.table(result_columns(chunk, info.labels))
            writer = writer or open_writer(sink, table.schema)
            writer.write_table(table)
            yield sink.take()
    finally:
        if writer is not None:
            writer.close()
    yield sink.take()


class _Sink(io.RawIOBase):
    """A write-only file whose bytes are taken as they come: Parquet streamed out."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def _list(values: Any) -> Any:
    """A chunk's values as a list: results are stored as arrays (older ones as lists)."""
    return values.tolist() if isinstance(values, np.ndarray) else values


def check(fmt_name: str, info: ResultInfo) -> None:
    """Refuse, before the first byte, a format that cannot hold these predictions: .npy holds
    numbers only (string or boolean labels: every other format keeps them)."""
    if fmt_name == "npy" and npy_dtype(info.labels) is None:
        raise NotAcceptable("a .npy array holds numbers only; this model predicts "
                            f"{label_type(info.labels).value} labels: send Accept: "
                            "application/json, application/x-ndjson, text/csv, "
                            "application/vnd.apache.parquet or "
                            "application/vnd.apache.arrow.stream")
