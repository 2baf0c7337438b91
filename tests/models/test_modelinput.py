"""Typed rows reach the model as what it was fitted on: predictions through JSON rows (or Arrow
columns), the stored bytes and `to_model_input` equal the pipeline's own on its DataFrame."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from service.jobs.typedcolumns import conform
from service.jobs.typedrows import TypedBounds, parse_typed_rows
from service.jobs.typedstore import decode_batch, encode_batch
from service.models.examples import schema_for
from service.models.modelinput import to_model_input
from service.models.schema import InputSchema
from tests.support import typed

BOUNDS = TypedBounds(max_rows=100_000)
MODELS: list[Callable[[], tuple[Any, Any]]] = [
    typed.churn, typed.hist_gradient_boosting, typed.ordinal, typed.dated, typed.strict_strings,
]


def _stored(batch: Any, schema: InputSchema) -> Any:
    """The batch as a worker reads it back from the store."""
    return decode_batch(encode_batch(batch, schema), schema, batch.num_rows)


def _same_predictions(model: Any, given: Any, frame: pd.DataFrame) -> None:
    np.testing.assert_array_equal(model.predict(given), model.predict(frame))
    if hasattr(model, "predict_proba"):
        np.testing.assert_allclose(model.predict_proba(given), model.predict_proba(frame),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", MODELS, ids=lambda f: f.__name__)
def test_json_rows_through_the_store_predict_as_the_pipeline_on_its_frame(
        make: Callable[[], tuple[Any, Any]]) -> None:
    model, frame = make()
    schema = schema_for(model, frame.head(20))
    batch = parse_typed_rows(typed.json_rows(frame), schema, BOUNDS)
    given = to_model_input(_stored(batch, schema), schema)
    assert list(given.columns) == schema.names
    _same_predictions(model, given, frame)


@pytest.mark.parametrize("make", MODELS, ids=lambda f: f.__name__)
def test_arrow_columns_predict_as_the_pipeline_on_its_frame(
        make: Callable[[], tuple[Any, Any]]) -> None:
    model, frame = make()
    schema = schema_for(model, frame.head(20))
    batch = conform(pa.Table.from_pandas(frame, preserve_index=False), schema, BOUNDS)
    _same_predictions(model, to_model_input(batch, schema), frame)


def test_inferred_schema_alone_serves_the_churn_pipeline() -> None:
    model, frame = typed.churn()
    schema = schema_for(model)  # no example: annual is a number, seats a float
    rows = typed.json_rows(frame)
    for row in rows:
        row["annual"] = int(row["annual"])
    _same_predictions(model, to_model_input(parse_typed_rows(rows, schema, BOUNDS), schema),
                      frame)


def test_unknown_category_goes_to_the_model_which_ignores_it() -> None:
    model, frame = typed.churn()
    schema = schema_for(model, frame.head(20))
    odd = frame.head(3).assign(plan=["platinum", "pro", None], country=["zz", "de", "fr"])
    batch = parse_typed_rows(typed.json_rows(odd), schema, BOUNDS)
    _same_predictions(model, to_model_input(batch, schema), odd)


def test_unknown_category_of_a_categorical_dtype_model_is_missing_as_it_treats_unseen() -> None:
    model, frame = typed.hist_gradient_boosting()
    schema = schema_for(model)
    odd = frame.head(2).astype({"plan": object}).assign(plan=["platinum", None])
    given = to_model_input(parse_typed_rows(typed.json_rows(odd), schema, BOUNDS), schema)
    assert given["plan"].isna().all()
    as_missing = frame.head(2).assign(plan=pd.Categorical([None, None],
                                                          categories=frame["plan"].cat.categories))
    _same_predictions(model, given, as_missing)


def test_array_model_gets_the_stored_float64_matrix_itself() -> None:
    model, x = typed.array_model()
    schema = schema_for(model)
    batch = parse_typed_rows(x.tolist(), schema, BOUNDS)
    stored = _stored(batch, schema)
    assert isinstance(stored, np.ndarray) and stored.dtype == np.float64
    assert to_model_input(stored, schema) is stored  # no copy on the way to predict()
    _same_predictions(model, to_model_input(stored, schema), x)


def test_numeric_frame_model_gets_a_frame_with_its_feature_names() -> None:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(50, 2)), columns=["a", "b"])
    model = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    schema = schema_for(model)
    given = to_model_input(_stored(conform(pa.table(frame), schema, BOUNDS), schema), schema)
    assert isinstance(given, pd.DataFrame) and list(given.columns) == ["a", "b"]
    _same_predictions(model, given, frame)


def test_nullable_booleans_and_integers_become_what_pandas_reads_from_a_file() -> None:
    schema = InputSchema.from_json(
        '{"format":1,"frame":true,"columns":[{"name":"b","type":"boolean","nullable":true},'
        '{"name":"i","type":"integer","nullable":true},{"name":"j","type":"integer"}]}')
    batch = parse_typed_rows([[True, 1, 5], [None, None, 6]], schema, BOUNDS)
    given = to_model_input(batch, schema)
    assert given["b"].dtype == object and given["b"][0] is True and np.isnan(given["b"][1])
    assert given["i"].dtype == np.float64 and np.isnan(given["i"][1])
    assert given["j"].dtype == np.int64


def test_jobs_batches_joined_for_one_predict_call_predict_as_each_alone() -> None:
    from service.models.modelinput import concat_batches

    model, frame = typed.churn()
    schema = schema_for(model, frame.head(20))
    parts = [_stored(parse_typed_rows(typed.json_rows(frame.iloc[i:j]), schema, BOUNDS),
                     schema) for i, j in ((0, 7), (7, 77), (77, 84), (84, 164))]
    kinds = [pa.types.is_dictionary(p.schema.field("plan").type) for p in parts]
    assert kinds == [False, True, False, True]  # stored plain, or with its own dictionary
    joined = concat_batches(parts)
    assert joined.num_rows == 164
    _same_predictions(model, to_model_input(joined, schema), frame.head(164))
    assert concat_batches([parts[0], parts[2]]).num_rows == 14
    assert concat_batches([parts[1], parts[3]]).num_rows == 150
    numbers = [np.ones((2, 3)), np.zeros((1, 3))]
    assert concat_batches(numbers).shape == (3, 3)
