"""The one registry of row formats: media types, file suffixes, and the functions that read a
body of that format into chunks of rows and write a result in it.

Importing this module loads no reader or writer (they import numpy, SQL and perhaps pyarrow):
the Python client and the OpenAPI description read the table; the API, the workers and
schedules call `Format.reader()` / `Format.writer()`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Format:
    name: str
    media_types: tuple[str, ...]  # the first is the one predq sends
    suffixes: tuple[str, ...]  # the first is the one predq writes
    read: str | None  # "module.function" in service.bulk: body -> chunks of rows; None: not read
    write: str | None  # "module.function" in service.bulk: chunks -> bytes; None: not written
    binary: bool = False
    needs: str | None = None  # an optional package the format needs
    typed: str | None = None  # "module.function": the reader for a typed model, if not `read`

    @property
    def media_type(self) -> str:
        return self.media_types[0]

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    @property
    def available(self) -> bool:
        """Whether this process can read and write it (an optional package may be missing)."""
        return self.needs is None or importlib.util.find_spec(self.needs) is not None

    def reader(self, plain: bool = True) -> Callable[..., Any]:
        """The function that reads a body into chunks for a model of plain numbers (`plain`,
        float64 rows), or for a typed model (record batches of its schema)."""
        assert self.read is not None, f"{self.name} bodies are not read"
        return _function(self.read if plain or self.typed is None else self.typed)

    def writer(self) -> Callable[..., Any]:
        assert self.write is not None, f"{self.name} results are not written"
        return _function(self.write)


def _function(where: str) -> Callable[..., Any]:
    module, name = where.rsplit(".", 1)
    return getattr(importlib.import_module(f"service.bulk.{module}"), name)  # type: ignore[no-any-return]


JSON = Format("json", ("application/json",), (".json",), None, "results.json_body")
CSV = Format("csv", ("text/csv",), (".csv",), "parsing.csv_chunks", "results.csv_body",
             typed="typedread.csv_batches")
NDJSON = Format("ndjson", ("application/x-ndjson", "application/jsonl"), (".ndjson", ".jsonl"),
                "parsing.ndjson_chunks", "results.ndjson_body", typed="typedread.ndjson_batches")
NPY = Format("npy", ("application/x-npy", "application/vnd.numpy"), (".npy",),
             "parsing.npy_chunks", "results.npy_body", binary=True,
             typed="typedread.npy_batches")
PARQUET = Format("parquet", ("application/vnd.apache.parquet", "application/x-parquet"),
                 (".parquet",), "columnar.parquet_chunks", "results.parquet_body", binary=True,
                 needs="pyarrow")
#: Arrow IPC: the stream format in and out; `.arrow` (usually the file format) and `.arrows`
#: files are sent as a stream, because the reader also takes the file format, whose start is
#: the same stream behind an 8-byte magic (its footer only repeats where the batches are).
ARROW = Format("arrow", ("application/vnd.apache.arrow.stream",), (".arrow", ".arrows"),
               "columnar.arrow_chunks", "results.arrow_body", binary=True, needs="pyarrow")
#: The Arrow file format is read (as above, streamed), not written: a result is sent as a
#: stream, which needs no footer and is what Arrow recommends on the wire.
ARROW_FILE = Format("arrow-file", ("application/vnd.apache.arrow.file",), (),
                    "columnar.arrow_chunks", None, binary=True, needs="pyarrow")
#: Every format, JSON (the default answer) first.
FORMATS = (JSON, CSV, NDJSON, NPY, PARQUET, ARROW, ARROW_FILE)
#: Formats a bulk body may come in, and those a result may be asked for.
READABLE = tuple(f for f in FORMATS if f.read is not None)
WRITABLE = tuple(f for f in FORMATS if f.write is not None)


def by_media_type(media_type: str) -> Format | None:
    return next((f for f in FORMATS if media_type in f.media_types), None)


def by_suffix(path: str | os.PathLike[str]) -> Format | None:
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    return next((f for f in FORMATS if suffix in f.suffixes), None)


def names(formats: tuple[Format, ...]) -> str:
    """`.csv, .ndjson, .jsonl, .npy, .parquet, .arrow or .arrows`: for messages."""
    suffixes = [s for f in formats for s in f.suffixes]
    return ", ".join(suffixes[:-1]) + " or " + suffixes[-1]


def choose(accept: Any) -> Format | None:
    """The written format that best matches a werkzeug Accept header (JSON when the client
    names none), or None: answer 406."""
    if not accept:
        return JSON
    offered = [m for f in WRITABLE if f.available for m in f.media_types]
    best = accept.best_match(offered)
    return by_media_type(str(best)) if best else None
