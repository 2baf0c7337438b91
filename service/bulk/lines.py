"""Lines of a text body (CSV, NDJSON), none held beyond a bound derived from the model's
width: a 100 MB line is refused after reading a few kilobytes of it, not after holding it.

The bound, for a model of n features named f_1..f_n:
    4096 + n * 1024 + sum(6 * utf8_bytes(f_i) + 8)
that is 1 KiB per value (a float64 needs at most 24 characters; the rest is room for spaces,
quotes and long decimals), room for every feature name as an NDJSON key even if each of its
bytes is escaped as \\uXXXX (plus quotes, colon, comma), and 4 KiB for brackets and slack.
Iris (4 features) gets 8,500; a model of 1,000 features named like `feature_999` ~1.1 MB.
A typed model's string column adds room for a string of `max_string` characters (1,000 by
default, `PREDQ_MAX_STRING_LENGTH`) with every character escaped: 6,008 bytes a string column.
The line's terminator is not counted; a CSV header line has the same bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, AnyStr, Generic

from service.models.registry import ModelInfo
from service.models.schema import ColumnType

VALUE = 1024  # characters for one value
NAME_ESCAPE = 6  # a name's byte written as \uXXXX
NAME_FRAME = 8  # quotes, colon, comma and a space around a name
SLACK = 4096  # brackets, separators, leading and trailing whitespace


def line_limit(model: ModelInfo, max_string: int = 1000) -> int:
    """The most characters (NDJSON: bytes) one line of a body for `model` may hold; a typed
    model's string column may take a string of `max_string` characters, each escaped."""
    names = sum(NAME_ESCAPE * len(name.encode()) + NAME_FRAME for name in model.feature_names)
    strings = sum(NAME_ESCAPE * max_string + NAME_FRAME for c in model.schema.columns
                  if c.type is ColumnType.STRING)
    return SLACK + model.n_features * VALUE + names + strings


class LineTooLong(Exception):
    """A line (or a CSV row spanning lines) past the bound; raised before it is held."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class Lines(Generic[AnyStr]):
    """The lines of `stream`, each read with readline(limit + 3) (in C, from the stream's own
    buffer), so at most the bound of a long line is ever held. `held` counts the characters
    of the row being read: csv.reader may ask for several lines for one row (a newline in
    quotes), so the CSV reader sets `held = 0` at the end of each row; NDJSON's at each line."""

    def __init__(self, stream: IO[AnyStr], limit: int) -> None:
        self.stream: IO[AnyStr] = stream
        self.limit = limit
        self.held = 0

    def __iter__(self) -> Iterator[AnyStr]:
        readline, limit = self.stream.readline, self.limit
        size = limit + 3  # a line of `limit` characters, "\r\n", and one more: too long
        while line := readline(size):
            self.held += len(line)
            if self.held > limit and self.held - _terminator(line) > limit:
                raise LineTooLong(limit)
            yield line

    def reason(self, model: ModelInfo, unit: str = "characters") -> str:
        """The message for a line past the bound (the caller names the line)."""
        return (f"longer than {self.limit:,} {unit}: a row for model {model.name} "
                f"({model.n_features} features) may take at most {self.limit:,}")


def _terminator(line: str | bytes) -> int:
    ends = b"\r\n" if isinstance(line, bytes) else "\r\n"
    return len(line) - len(line.rstrip(ends))  # type: ignore[arg-type]
