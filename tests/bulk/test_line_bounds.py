"""No line of a text body is held beyond the bound derived from the model's width: the
readers on their own, with bodies that count how much of them was read."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest

from service.bulk import lines, parsing
from service.core.errors import InvalidInput
from tests.bulk.test_formats import IRIS

LIMIT = lines.line_limit(IRIS)
HEADER = b"sepal_length,sepal_width,petal_length,petal_width\n"
BOUNDS = parsing.Bounds(chunk_rows=1000, max_rows=1000)


class Counted(io.RawIOBase):
    """`head`, then `size` bytes of `fill`, then `tail`, made as they are read."""

    def __init__(self, head: bytes, fill: bytes, size: int, tail: bytes = b"") -> None:
        super().__init__()
        self.parts: Iterator[bytes] = iter([head, *self._fill(fill, size), tail])
        self.left = b""
        self.read_bytes = 0

    @staticmethod
    def _fill(fill: bytes, size: int) -> Iterator[bytes]:
        block = fill * (65536 // len(fill))
        while size > 0:
            yield block[:size]
            size -= len(block)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self.left:
            self.left = next(self.parts, b"")
            if not self.left:
                return 0
        n = min(len(buffer), len(self.left))
        buffer[:n], self.left = self.left[:n], self.left[n:]
        self.read_bytes += n
        return n


def refusal(body: io.RawIOBase, reader: parsing.Reader) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        list(reader(io.BufferedReader(body, 1 << 16), IRIS, BOUNDS))
    return refused.value


def test_the_bound_is_a_kilobyte_a_feature_plus_room_for_names() -> None:
    names = sum(6 * len(n) + 8 for n in IRIS.feature_names)
    assert LIMIT == 4096 + 4 * 1024 + names == 8500


@pytest.mark.parametrize(("reader", "unit"), [(parsing.csv_chunks, "characters"),
                                              (parsing.ndjson_chunks, "bytes")])
def test_a_100_mb_line_is_refused_after_reading_little_of_it(
    reader: parsing.Reader, unit: str
) -> None:
    head = HEADER + b"1,2,3,4\n" if reader is parsing.csv_chunks else b"[1,2,3,4]\n"
    body = Counted(head + b"\n", b"1,", 100_000_000, b"1\n")
    error = refusal(body, reader)
    line = 4 if reader is parsing.csv_chunks else 3  # a blank line before it: rows and lines
    assert error.field == "row 2", error  # differ
    assert error.reason.startswith(f"line {line}: longer than 8,500 {unit}"), error.reason
    assert "model iris (4 features) may take at most 8,500" in error.reason
    assert body.read_bytes < 200_000  # the bound plus a buffer or two, not 100 MB


@pytest.mark.parametrize("reader", [parsing.csv_chunks, parsing.ndjson_chunks])
def test_a_line_of_exactly_the_bound_is_read(reader: parsing.Reader) -> None:
    if reader is parsing.csv_chunks:  # numbers padded with spaces, as float() allows
        body = HEADER + b"1,2,3," + b" " * (LIMIT - 7) + b"4\r\n5,6,7,8\n"
    else:
        body = b"[1,2,3," + b" " * (LIMIT - 9) + b"4]\r\n[5,6,7,8]\n"
    assert len(body.splitlines()[-2]) == LIMIT
    got = np.concatenate(list(reader(io.BytesIO(body), IRIS, BOUNDS)))
    assert got.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    longer = body.replace(b"1,2,3,", b"1,2,3, ", 1)
    error = refusal(io.BytesIO(longer), reader)  # type: ignore[arg-type]
    line = 2 if reader is parsing.csv_chunks else 1
    assert error.field == "row 1" and error.reason.startswith(f"line {line}: longer than 8,500")


def test_a_csv_header_past_the_bound_is_refused() -> None:
    body = Counted(b"sepal_length,", b" ", 50_000_000, b"x\n")
    error = refusal(body, parsing.csv_chunks)
    assert error.field == "header" and error.reason.startswith("line 1: longer than 8,500")
    assert body.read_bytes < 200_000


def test_a_csv_row_spanning_lines_in_quotes_is_bounded_as_one_row() -> None:
    """Each line short, the row endless: a quoted newline continues it, field after field."""
    body = Counted(HEADER + b'1,2,3,4\n1,"\n', b'",1,"\n', 100_000_000)
    error = refusal(body, parsing.csv_chunks)
    assert error.field == "row 2" and "longer than 8,500" in error.reason
    assert body.read_bytes < 200_000
