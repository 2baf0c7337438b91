"""Results in the format the client's Accept header asks for - JSON, NDJSON, CSV or .npy -
written chunk by chunk in input order, so a result of millions of rows is never held whole."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

#: Media types served, the first being the default.
MEDIA_TYPES = ("application/json", "application/x-ndjson", "text/csv", "application/x-npy")
SUFFIX = {"application/json": ".json", "application/x-ndjson": ".ndjson", "text/csv": ".csv",
          "application/x-npy": ".npy"}

Chunks = Callable[[], Iterable[dict[str, Any]]]  # each call iterates the chunks from the start


def json_body(chunks: Chunks, provenance: dict[str, Any], has_probabilities: bool
              ) -> Iterator[bytes]:
    """The same document as a small job's result: {"predictions": [...], "probabilities":
    [...], "model", "version", "sha256"}; one pass over the chunks per list."""
    keys = ["predictions"] + (["probabilities"] if has_probabilities else [])
    yield b"{"
    for i, key in enumerate(keys):
        yield (b", " if i else b"") + json.dumps(key).encode() + b": ["
        first = True
        for chunk in chunks():
            values = chunk.get(key, [])
            if values:
                text = json.dumps(values)[1:-1]
                yield (b"" if first else b", ") + text.encode()
                first = False
        yield b"]"
    yield b", " + json.dumps(provenance)[1:].encode()


def ndjson_body(chunks: Chunks) -> Iterator[bytes]:
    """One line per row: {"prediction": ..., "probabilities": [...]}."""
    for chunk in chunks():
        probabilities = chunk.get("probabilities")
        lines = []
        for i, prediction in enumerate(chunk["predictions"]):
            row: dict[str, Any] = {"prediction": prediction}
            if probabilities is not None:
                row["probabilities"] = probabilities[i]
            lines.append(json.dumps(row))
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def csv_body(chunks: Chunks, labels: list[Any] | None) -> Iterator[bytes]:
    """A header, then one line per row: prediction and, for classifiers, p_<label> columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prediction"] + [f"p_{label}" for label in labels or []])
    for chunk in chunks():
        probabilities = chunk.get("probabilities")
        for i, prediction in enumerate(chunk["predictions"]):
            writer.writerow([prediction] + (list(probabilities[i]) if probabilities else []))
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue().encode()


def npy_body(chunks: Chunks, n_rows: int, labels: list[Any] | None) -> Iterator[bytes]:
    """The predictions as one .npy array of `n_rows` (numbers as float64 or int64, string
    labels as fixed-width unicode); the header first, then each chunk's bytes."""
    dtype = _npy_dtype(labels)
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": (n_rows,)})
    yield header.getvalue()  # magic string included
    for chunk in chunks():
        yield np.asarray(chunk["predictions"], dtype=dtype).tobytes()


def _npy_dtype(labels: list[Any] | None) -> np.dtype[Any]:
    if labels is None:
        return np.dtype("<f8")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        return np.dtype("<i8")
    if all(isinstance(x, int | float) and not isinstance(x, bool) for x in labels):
        return np.dtype("<f8")
    return np.dtype(f"<U{max(len(str(x)) for x in labels) or 1}")


def choose(accept: Any) -> str | None:
    """The served media type that best matches a werkzeug Accept header, or None (406)."""
    if not accept:
        return MEDIA_TYPES[0]
    best = accept.best_match(MEDIA_TYPES)
    return str(best) if best else None
