"""CSV bodies: blocks of plain lines are parsed in C; from the first block that holds anything
else the row-by-row reader takes over, so both give the same rows and the same errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from service.bulk import parsing
from service.core.errors import InvalidInput
from tests.bulk.test_formats import IRIS

NAMES = ["petal_width", "sepal_length", "sepal_width", "petal_length"]  # not the model's order
BOUNDS = parsing.Bounds(chunk_rows=7000, max_rows=10**6)


def body(rows: np.ndarray) -> bytes:
    out = io.StringIO()
    out.write(",".join(NAMES) + "\n")
    np.savetxt(out, rows[:, [3, 0, 1, 2]], delimiter=",", fmt="%.6g")
    return out.getvalue().encode()


def read(data: bytes, bounds: parsing.Bounds = BOUNDS) -> list[np.ndarray]:
    return list(parsing.csv_chunks(io.BufferedReader(io.BytesIO(data)), IRIS, bounds))


def rows(n: int) -> np.ndarray:
    return np.round(np.random.default_rng(5).uniform(0.1, 8, (n, 4)), 4)


def test_a_large_plain_body_gives_every_row_in_chunks_of_the_chunk_size() -> None:
    expected = rows(50_000)
    chunks = read(body(expected))
    assert [len(c) for c in chunks] == [7000] * 7 + [1000]
    assert np.array_equal(np.concatenate(chunks), expected)


def test_a_quoted_value_late_in_the_body_hands_over_and_gives_the_same_rows() -> None:
    expected = rows(40_000)
    data = body(expected)
    at = data.index(b"\n", len(data) * 3 // 4) + 1
    line_end = data.index(b"\n", at)
    fields = data[at:line_end].split(b",")
    quoted = data[:at] + b",".join([b'"' + fields[0] + b'"', *fields[1:]]) + data[line_end:]
    assert np.array_equal(np.concatenate(read(quoted)), expected)


@pytest.mark.parametrize(("bad", "reason"), [
    (b"5.1,oops,1.4,0.2", "column 'sepal_length' is 'oops', not a number"),
    (b"5.1,nan,1.4,0.2", "column 'sepal_length' must be a finite number"),
    (b"5.1,3.5,1.4", "3 fields; the header has 4"),
])
def test_a_bad_row_deep_in_the_body_is_named_with_its_row_and_line(bad: bytes, reason: str
                                                                   ) -> None:
    good = body(rows(30_000))
    data = good + b"\n" + bad + b"\n" + b"1,2,3,4\n" * 10  # a blank line before it
    with pytest.raises(InvalidInput) as refused:
        read(data)
    assert refused.value.field == "row 30001"
    assert refused.value.reason.startswith("line 30003: ") and reason in refused.value.reason


def test_too_many_rows_are_refused_on_the_fast_path_too() -> None:
    with pytest.raises(InvalidInput) as refused:
        read(body(rows(20_000)), parsing.Bounds(chunk_rows=1000, max_rows=15_000))
    assert "more than 15000 rows" in refused.value.reason


def test_plain_blocks_take_the_fast_path_and_anything_else_is_left_to_the_reader() -> None:
    from service.bulk import csvfast, lines

    order = [NAMES.index(n) for n in IRIS.feature_names]
    limit = lines.line_limit(IRIS)
    plain = csvfast.parse(b"0.2,5.1,3.5,1.4\n\n0.3,5.0,3.0,1.5\n", NAMES, order, limit)
    assert plain is not None and plain.tolist() == [[5.1, 3.5, 1.4, 0.2], [5.0, 3.0, 1.5, 0.3]]
    for block in (b'"0.2",5.1,3.5,1.4\n', b"0.2,5.1,3.5\n", b"0.2,5.1,3.5,inf\n",
                  b"0.2,5.1,3.5,1_4\n", b"0.2,5.1,3.5,1.4\r\n",
                  b"0.2," + b"1" * limit + b",3.5,1.4\n"):
        assert csvfast.parse(block, NAMES, order, limit) is None, block
