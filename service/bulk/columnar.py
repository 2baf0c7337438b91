"""Bulk input in columns: Parquet bodies, a numeric column per feature (any order, extra
columns ignored), read a record batch at a time (needs pyarrow) and cut into chunks of float64
rows like the text formats. Parquet keeps its footer at the end, so its body is spooled to a
temporary file first."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from service.bulk.parsing import Bounds, bad_row, too_many
from service.core.errors import InvalidInput
from service.models.registry import ModelInfo


def parquet_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """A Parquet file, read a record batch of `chunk_rows` at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        try:
            source = pq.ParquetFile(spool)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput("inputs", f"not a Parquet file: {exc}") from None
        columns = set(source.schema_arrow.names)
        missing = [name for name in model.feature_names if name not in columns]
        if missing:
            raise InvalidInput("header", f"missing column {missing[0]!r}")
        total = source.metadata.num_rows
        if not 1 <= total <= bounds.max_rows:
            raise InvalidInput("inputs", f"{total} rows; between 1 and {bounds.max_rows} per job")
        yield from _matrices(source.iter_batches(batch_size=bounds.chunk_rows,
                                                 columns=list(model.feature_names)),
                             model, bounds)


def _matrices(batches: Iterator[Any], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """Record batches as float64 matrices in signature order, each row checked."""
    import pyarrow as pa

    done = 0
    for batch in batches:
        if done + batch.num_rows > bounds.max_rows:
            raise too_many(bounds.max_rows)
        try:
            matrix = np.column_stack([
                batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                for name in model.feature_names])
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise bad_row(done + 1, f"rows {done + 1}-{done + batch.num_rows} hold a value "
                                    f"that is not a number: {exc}") from None
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            raise bad_row(done + int(np.argmin(finite)) + 1,
                          "must hold finite numbers only (no nulls)")
        done += len(matrix)
        if len(matrix):
            yield matrix
    if done == 0:
        raise InvalidInput("inputs", "the body has no rows")
