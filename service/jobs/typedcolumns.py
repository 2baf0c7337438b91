"""Arrow data (a Parquet or Arrow body's record batch, a CSV or NDJSON block read by pyarrow)
checked against a typed input schema and cast to its Arrow types: the bulk readers' half of
what `typedrows` does for JSON rows, with the same rules and bounds, vectorised.

What each column may hold: number <- integers, floats, decimals, or their text (a CSV's; NaN
is missing, infinities are refused); integer <- integers, floats without a fraction, or their
text; boolean <- booleans, or strings "true"/"false"/"1"/"0"; string <- strings,
dictionary-encoded strings; datetime <- timestamps of any unit (naive is UTC), dates,
ISO-8601 strings. Nulls only where the column is nullable;
a nullable column may be absent (all missing); extra columns are ignored.
"""

from __future__ import annotations

from typing import Any

from service.core.errors import InvalidInput
from service.jobs.typedrows import TypedBounds, parse_datetime
from service.models.schema import Column, ColumnType, InputSchema, arrow_schema, arrow_type


def conform(data: Any, schema: InputSchema, bounds: TypedBounds, first_row: int = 1) -> Any:
    """`data` (a pyarrow RecordBatch or Table) as a RecordBatch of the schema's columns and
    types; errors name the first bad row (`first_row` is the number of data's first row)."""
    import pyarrow as pa

    if data.num_rows > bounds.max_rows:
        raise InvalidInput("inputs", f"{data.num_rows} rows; at most {bounds.max_rows}")
    names = data.schema.names
    arrays = []
    for column in schema.columns:
        found = [i for i, n in enumerate(names) if n == column.name]
        if len(found) > 1:
            raise InvalidInput("header", f"column {column.name!r} appears twice")
        if not found:
            if not column.nullable:
                raise InvalidInput("header", f"missing column {column.name!r}")
            arrays.append(pa.nulls(data.num_rows, arrow_type(column)))
            continue
        raw = data.column(found[0])
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        array = _cast(raw, column, first_row)
        _check(array, column, bounds, first_row)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(schema))


def _cast(array: Any, column: Column, first_row: int) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind, target = array.type, arrow_type(column)
    if pa.types.is_dictionary(kind):
        array, kind = array.dictionary_decode(), kind.value_type
    if column.type is ColumnType.DATETIME and _is_text(kind):
        return _datetimes(array, column, first_row)
    if not _accepts(column.type, kind):
        raise InvalidInput("header", f"column {column.name!r} holds {kind}; expected "
                                     f"{column.type.value} values")
    try:
        if column.type is ColumnType.DATETIME:
            return pc.cast(array, target, safe=False)  # below a microsecond is dropped
        return pc.cast(array, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        row = _first_uncastable(array, target)
        raise InvalidInput(f"row {first_row + row}.{column.name}",
                           f"expected {column.type.value} values: {str(exc)[:200]}") from None


def _accepts(kind: ColumnType, arrow: Any) -> bool:
    import pyarrow as pa

    number = pa.types.is_integer(arrow) or pa.types.is_floating(arrow) or pa.types.is_decimal(
        arrow) or pa.types.is_null(arrow)
    return {
        ColumnType.NUMBER: number or _is_text(arrow),
        ColumnType.INTEGER: number or _is_text(arrow),
        ColumnType.BOOLEAN: pa.types.is_boolean(arrow) or _is_text(arrow)
        or pa.types.is_null(arrow),
        ColumnType.STRING: _is_text(arrow) or pa.types.is_null(arrow),
        ColumnType.DATETIME: pa.types.is_timestamp(arrow) or pa.types.is_date(arrow)
        or pa.types.is_null(arrow),
    }[kind]


def _is_text(arrow: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(arrow) or pa.types.is_large_string(arrow)
                or getattr(pa.types, "is_string_view", lambda _: False)(arrow))


def _datetimes(array: Any, column: Column, first_row: int) -> Any:
    """ISO-8601 strings: parsed in C where they all have an offset or none do, else one by
    one (which names the bad row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            return pc.cast(pc.cast(array, target), arrow_type(column))
        except pa.ArrowInvalid:
            continue
    values = [None if text is None else parse_datetime(text, f"row {first_row + i}."
                                                             f"{column.name}")
              for i, text in enumerate(array.to_pylist())]
    return pa.array(values, type=arrow_type(column))


def _first_uncastable(array: Any, target: Any) -> int:
    import pyarrow as pa

    for i in range(len(array)):
        try:
            array.slice(i, 1).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return i
    return 0


def _check(array: Any, column: Column, bounds: TypedBounds, first_row: int) -> None:
    import pyarrow.compute as pc

    where = f"{column.name}"
    if column.type is ColumnType.NUMBER:
        infinite = pc.is_inf(array)
        if pc.any(infinite).as_py():
            row = first_row + _first(infinite)
            raise InvalidInput(f"row {row}.{where}", "expected a finite number")
    missing = pc.is_null(array, nan_is_null=True)
    if not column.nullable and pc.any(missing).as_py():
        raise InvalidInput(f"row {first_row + _first(missing)}.{where}",
                           f"missing value; column {column.name!r} may not be missing")
    if column.type is ColumnType.STRING:
        _check_strings(array, column, bounds, first_row)
    if column.closed and column.categories is not None:
        import pyarrow as pa

        known = pa.array(list(column.categories), type=arrow_type(column))
        outside = pc.and_(pc.invert(pc.is_in(array, value_set=known)), pc.invert(missing))
        if pc.any(outside).as_py():
            i = _first(outside)
            raise InvalidInput(f"row {first_row + i}.{where}",
                               f"unknown category {array[i].as_py()!r} of a closed column")


def _check_strings(array: Any, column: Column, bounds: TypedBounds, first_row: int) -> None:
    import pyarrow.compute as pc

    lengths = pc.utf8_length(array)
    longest = pc.max(lengths).as_py()
    if longest is not None and longest > bounds.max_string:
        i = _first(pc.greater(lengths, bounds.max_string))
        raise InvalidInput(f"row {first_row + i}.{column.name}",
                           f"a string of {lengths[i].as_py()} characters; at most "
                           f"{bounds.max_string}")
    distinct = pc.count_distinct(array).as_py()
    if distinct > bounds.max_distinct:
        raise InvalidInput(f"row {first_row}.{column.name}",
                           f"{distinct} distinct values in one chunk; at most "
                           f"{bounds.max_distinct}")


def _first(mask: Any) -> int:
    """The index of the first true value of a boolean array (nulls count as false)."""
    import pyarrow.compute as pc

    return int(pc.index(pc.fill_null(mask, False), True).as_py())
