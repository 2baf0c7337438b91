"""The fast path of CSV bodies: blocks of whole lines parsed by pyarrow's CSV reader (in C),
about ten times Python's `csv` module. A block it cannot take as it is - a quote, a line over
the bound, a value that is not a plain finite number, a wrong number of fields - is handed to
the row-by-row reader (`parsing`), which is the reference: it accepts what it always accepted
and names the first bad row. So the two never disagree on what a body means."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import numpy as np

BLOCK = 1 << 20  # the most bytes read at a time (from 64 KiB up: a bad first line is cheap)


def blocks(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    """The stream in blocks of whole lines (the last may lack its newline). A line longer
    than `limit` is given as soon as that is clear, not held: `parse` then leaves it."""
    carry = b""
    size = 1 << 16
    # read1: what has arrived (one read of the socket), not a wait for `size` bytes: a slow
    # upload's first rows are stored, and predicted, as they come.
    read = getattr(stream, "read1", stream.read)
    while True:
        data = read(size)
        size = min(size * 2, BLOCK)
        if not data:
            if carry:
                yield carry
            return
        data = carry + data
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if cut:
            yield data[:cut]
        if len(carry) > limit:
            yield carry  # too long a line: the row-by-row reader refuses it
            carry = b""


def lines_in(block: bytes) -> int:
    return block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


def parse(block: bytes, names: list[str], order: list[int], limit: int
          ) -> np.ndarray | None:
    """The block's rows as float64 in signature order, or None: leave it to the row-by-row
    reader."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if b'"' in block or b"\r" in block:
        return None
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(block)]))
    if len(block) and int((stops - starts).max()) > limit:
        return None
    try:
        table = pacsv.read_csv(
            pa.py_buffer(block),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.float64() for name in names}, null_values=[],
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    matrix = np.empty((table.num_rows, len(order)))
    for j, i in enumerate(order):
        matrix[:, j] = table.column(i).to_numpy()
    return matrix if np.isfinite(matrix).all() else None
