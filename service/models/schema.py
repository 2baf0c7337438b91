"""A model version's typed input schema: its columns in order, each with a type, whether it may
be missing and, for a categorical column, the values the fitted model knows.

It is what the API validates against, what every reader converts to, what chunks are stored
as (Arrow types, `arrow_schema`) and what the worker rebuilds the model's input from. Stored
in the registry as JSON (`to_json`/`from_json`, which keep the pandas details the worker
needs) and shown to clients in a shorter form (`public`).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.core.errors import ModelLoadError

FORMAT = 1  # the stored JSON's version: a reader refuses a newer one rather than guessing
PUBLIC_CATEGORIES = 1000  # at most this many categories per column in the public form


class ColumnType(StrEnum):
    """The five types a column can have (MLflow's double, long, boolean, string, datetime)."""

    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING = "string"
    DATETIME = "datetime"


Category = str | int | float | bool


@dataclass(frozen=True)
class Column:
    """One input column. `categories` are the values the fitted model knows (None: not a
    categorical column, or not known); a value outside them still goes to the model, which
    handles it as it was fitted to, unless `closed`. `dtype` is the pandas dtype the model
    was fitted on when it matters or is known ("category", "object", "datetime64[ns]", ...);
    `na` how a missing value looked when it was fitted ("nan", or "none" for Python None in
    an object column: an encoder that learnt None as a category does not match NaN)."""

    name: str
    type: ColumnType
    nullable: bool = False
    categories: tuple[Category, ...] | None = None
    closed: bool = False
    dtype: str | None = None
    na: str = "nan"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type.value,
                               "nullable": self.nullable}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.closed:
            out["closed"] = True
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.na != "nan":
            out["na"] = self.na
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Column:
        categories = data.get("categories")
        return cls(
            name=str(data["name"]),
            type=ColumnType(data["type"]),
            nullable=bool(data.get("nullable", False)),
            categories=None if categories is None else tuple(categories),
            closed=bool(data.get("closed", False)),
            dtype=data.get("dtype"),
            na=str(data.get("na", "nan")),
        )


@dataclass(frozen=True)
class InputSchema:
    """The columns a model takes, in the order it was fitted on. `frame`: the model was fitted
    on a pandas DataFrame and gets one with these dtypes; otherwise a 2-D array. `ignored`:
    columns the model was fitted with but drops (a ColumnTransformer's "drop"): a client may
    send them, they are not kept."""

    columns: tuple[Column, ...]
    frame: bool
    ignored: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric_only(self) -> bool:
        """Every column a float64 number: such inputs stay a float64 matrix (NaN = missing),
        stored and handed over as they were before types."""
        return all(c.type is ColumnType.NUMBER for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @classmethod
    def numbers(cls, names: list[str], frame: bool = False, nullable: bool = False
                ) -> InputSchema:
        """The schema of an all-numeric model (how every model looked before types)."""
        return cls(tuple(Column(n, ColumnType.NUMBER, nullable) for n in names), frame)

    def summary(self) -> str:
        """One line for a terminal: `plan string, age number?, ...` (`?`: may be missing),
        the first ten columns."""
        shown = [f"{c.name} {c.type.value}{'?' if c.nullable else ''}"
                 for c in self.columns[:10]]
        more = len(self.columns) - len(shown)
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")

    def to_json(self) -> str:
        """The stored form (the registry's column): everything, pandas details included."""
        return json.dumps({"format": FORMAT, "frame": self.frame,
                           "columns": [c.to_dict() for c in self.columns],
                           "ignored": list(self.ignored)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> InputSchema:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ModelLoadError(f"input schema format {data.get('format')!r}; this predq "
                                 f"reads format {FORMAT}")
        return cls(tuple(Column.from_dict(c) for c in data["columns"]), bool(data["frame"]),
                   tuple(data.get("ignored", ())))

    def public(self) -> dict[str, Any]:
        """What `GET /v1/models/{name}` shows: columns with type, nullability and (at most
        PUBLIC_CATEGORIES) known categories; no pandas details."""
        columns = []
        for c in self.columns:
            out: dict[str, Any] = {"name": c.name, "type": c.type.value, "nullable": c.nullable}
            if c.categories is not None:
                out["categories"] = list(c.categories[:PUBLIC_CATEGORIES])
                out["n_categories"] = len(c.categories)
                out["closed"] = c.closed
            columns.append(out)
        return {"columns": columns, "input": "dataframe" if self.frame else "array",
                **({"ignored": list(self.ignored)} if self.ignored else {})}


def arrow_type(column: Column) -> Any:
    """The Arrow type a column's values take in a batch: float64, int64, bool, string, or
    timestamp[us, UTC] (a naive datetime is read as UTC)."""
    return _arrow_types()[column.type]


@functools.cache
def _arrow_types() -> dict[ColumnType, Any]:
    """Built once: every typed job asks for each of its columns' (7 us a call when built)."""
    import pyarrow as pa

    return {
        ColumnType.NUMBER: pa.float64(),
        ColumnType.INTEGER: pa.int64(),
        ColumnType.BOOLEAN: pa.bool_(),
        ColumnType.STRING: pa.string(),
        ColumnType.DATETIME: pa.timestamp("us", tz="UTC"),
    }


def arrow_schema(schema: InputSchema) -> Any:
    """The schema's Arrow form: one nullable field per column (nullability is checked on the
    way in, not by Arrow), in order."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c)) for c in schema.columns])


def clean_category(value: Any) -> Category | None:
    """A known category as a plain JSON value (numpy scalars unwrapped); None for a missing
    marker (None or NaN), which makes a column nullable rather than being a category."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)
