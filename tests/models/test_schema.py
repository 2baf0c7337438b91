"""The typed input schema: inferred from real fitted pipelines, pinned by input examples,
refused when neither tells a column's type, stored and shown as JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service.core.errors import InvalidInput, ModelLoadError
from service.models.examples import close, from_example, merge, schema_for
from service.models.inference import infer
from service.models.schema import Column, ColumnType, InputSchema
from tests.support import typed


def test_churn_pipeline_gives_string_columns_with_categories_and_imputed_numbers() -> None:
    model, _ = typed.churn()
    schema = infer(model).schema()
    assert schema.frame and schema.names == list(model.feature_names_in_)
    plan = schema.column("plan")
    assert plan.type is ColumnType.STRING
    assert plan.categories == ("basic", "enterprise", "pro", "team")
    assert plan.nullable  # handle_unknown="ignore": a missing plan is all zeros
    assert schema.column("age").type is ColumnType.NUMBER and schema.column("age").nullable
    annual = schema.column("annual")  # passed through to LogisticRegression, which takes no NaN
    assert annual.type is ColumnType.NUMBER and not annual.nullable


def test_an_example_pins_integers_and_booleans_and_keeps_inferred_categories() -> None:
    model, frame = typed.churn()
    schema = schema_for(model, frame.head(10))
    assert schema.column("seats").type is ColumnType.INTEGER
    assert schema.column("annual").type is ColumnType.BOOLEAN
    assert schema.column("plan").categories == ("basic", "enterprise", "pro", "team")
    assert schema.column("age").nullable


def test_hist_gradient_boosting_from_dtype_needs_a_categorical_and_takes_nan() -> None:
    model, _ = typed.hist_gradient_boosting()
    schema = infer(model).schema()
    plan = schema.column("plan")
    assert (plan.type, plan.dtype) == (ColumnType.STRING, "category")
    assert plan.categories == ("basic", "enterprise", "pro", "team")
    assert all(c.nullable for c in schema.columns)


def test_ordinal_branch_integer_categories_and_dropped_column_is_ignored() -> None:
    model, _ = typed.ordinal()
    schema = infer(model).schema()
    assert schema.ignored == ("id",)
    assert schema.names == ["country", "tickets", "annual"]
    assert schema.column("country").nullable  # use_encoded_value: missing is unknown, -1
    tickets = schema.column("tickets")
    assert tickets.type is ColumnType.INTEGER
    assert tickets.categories and all(isinstance(c, int) for c in tickets.categories)


def test_encoder_that_refuses_unknown_values_makes_the_column_not_nullable() -> None:
    model, _ = typed.strict_strings()
    schema = infer(model).schema()
    assert not schema.column("plan").nullable
    country = schema.column("country")  # imputed (most frequent) then one-hot encoded
    assert country.nullable and country.categories == ("br", "de", "fr", "gb", "jp", "us")


def test_array_model_takes_numbers_named_by_position() -> None:
    model, _ = typed.array_model()
    schema = infer(model).schema()
    assert not schema.frame and schema.numeric_only
    assert schema.names == ["x0", "x1", "x2"]
    assert not any(c.nullable for c in schema.columns)


def test_estimator_taking_nan_natively_on_an_array_has_nullable_columns() -> None:
    x = np.random.default_rng(0).normal(size=(100, 2))
    x[::5, 0] = np.nan
    model = HistGradientBoostingRegressor(max_iter=5).fit(x, np.arange(100.0))
    assert all(c.nullable for c in infer(model).schema().columns)


def test_datetime_read_by_a_function_is_refused_without_an_example() -> None:
    model, frame = typed.dated()
    with pytest.raises(ModelLoadError) as caught:
        schema_for(model)
    assert "'signup'" in caught.value.message and "--example" in caught.value.message
    schema = schema_for(model, frame.head(3))
    signup = schema.column("signup")
    assert (signup.type, signup.dtype) == (ColumnType.DATETIME, "datetime64[ns]")


def test_example_missing_the_undetermined_column_is_refused() -> None:
    model, frame = typed.dated()
    with pytest.raises(ModelLoadError, match="'signup'"):
        schema_for(model, frame[["plan", "seats"]].head(3))


def test_example_contradicting_the_model_is_refused() -> None:
    model, frame = typed.churn()
    wrong = frame.head(5).assign(plan=[1, 2, 3, 4, 5])
    with pytest.raises(ModelLoadError, match="'plan' holds integer values; the model reads it "
                                             "as string"):
        schema_for(model, wrong)


def test_selector_columns_resolved_at_fit_are_inferred() -> None:
    frame = pd.DataFrame({"plan": ["a", "b", "c", "a"] * 10, "x": np.arange(40.0)})
    model = make_pipeline(make_column_transformer(
        (OneHotEncoder(), make_column_selector(dtype_include=object)),
        (StandardScaler(), make_column_selector(dtype_include="number"))),
        LogisticRegression()).fit(frame.astype({"plan": object}), np.arange(40) % 2)
    schema = infer(model).schema()
    assert schema.column("plan").categories == ("a", "b", "c")
    assert schema.column("x").type is ColumnType.NUMBER


def test_text_vectorizer_column_is_a_string() -> None:
    frame = pd.DataFrame({"note": ["late payment", "happy customer", "asked to cancel"] * 5,
                          "seats": np.arange(15.0)})
    model = make_pipeline(make_column_transformer((TfidfVectorizer(), "note"),
                                                 (StandardScaler(), ["seats"])),
                          LogisticRegression()).fit(frame, np.arange(15) % 2)
    note = infer(model).schema().column("note")
    assert note.type is ColumnType.STRING and note.categories is None


def test_custom_transformer_needs_an_example() -> None:
    class Custom:  # not from scikit-learn: predq cannot tell what it reads
        def fit(self, x: pd.DataFrame, y: object = None) -> Custom:
            self.feature_names_in_ = np.asarray(x.columns, dtype=object)
            return self

        def transform(self, x: pd.DataFrame) -> np.ndarray:
            return np.asarray(x, dtype=float)

    frame = pd.DataFrame({"a": np.arange(20.0)})
    model = make_pipeline(Custom(), LogisticRegression())
    model.fit(frame, np.arange(20) % 2)
    with pytest.raises(ModelLoadError, match="'a' \\(read by Custom\\)"):
        schema_for(model)


def test_from_example_maps_pandas_dtypes() -> None:
    frame = pd.DataFrame({
        "s": pd.Series(["a", None, "c"], dtype=object), "b": [True, False, True],
        "i": pd.array([1, None, 3], "Int64"), "f": [1.5, np.nan, 2.0],
        "t": pd.to_datetime(["2024-01-01", "2024-01-02", None], utc=True),
        "c": pd.Categorical(["x", "y", "x"], categories=["y", "x"])})
    schema = from_example(frame)
    kinds = {c.name: (c.type.value, c.nullable) for c in schema.columns}
    assert kinds == {"s": ("string", True), "b": ("boolean", False), "i": ("integer", True),
                     "f": ("number", True), "t": ("datetime", True), "c": ("string", False)}
    assert schema.column("c").categories == ("y", "x") and schema.column("c").dtype == "category"
    assert schema.column("s").na == "none"  # an object column that held None, not NaN


def test_from_example_refuses_a_column_of_mixed_types() -> None:
    with pytest.raises(InvalidInput) as caught:
        from_example([{"a": "x"}, {"a": 3}])
    assert caught.value.field == "example.a"


def test_closing_a_column_needs_categories() -> None:
    model, _ = typed.churn()
    schema = close(infer(model).schema(), ["plan"])
    assert schema.column("plan").closed
    with pytest.raises(InvalidInput, match="no known categories"):
        close(schema, ["age"])
    with pytest.raises(InvalidInput, match="no column"):
        close(schema, ["nope"])


def test_json_round_trip_keeps_everything_and_public_form_hides_pandas_details() -> None:
    model, frame = typed.hist_gradient_boosting()
    schema = close(schema_for(model, frame.head(5)), ["plan"])
    assert InputSchema.from_json(schema.to_json()) == schema
    public = schema.public()
    assert public["input"] == "dataframe"
    assert public["columns"][0] == {"name": "plan", "type": "string", "nullable": True,
                                    "categories": ["basic", "enterprise", "pro", "team"],
                                    "n_categories": 4, "closed": True}
    assert "dtype" not in json.dumps(public)


def test_stored_schema_of_a_newer_format_is_refused() -> None:
    text = InputSchema((Column("a", ColumnType.NUMBER),), False).to_json()
    with pytest.raises(ModelLoadError, match="format 2"):
        InputSchema.from_json(text.replace('"format":1', '"format":2'))


def test_merge_without_example_is_the_inferred_schema() -> None:
    model, _ = typed.churn()
    assert merge(infer(model), None) == infer(model).schema()


def test_example_as_json_records_types_strings_numbers_and_booleans() -> None:
    schema = from_example([{"plan": "pro", "age": None, "seats": 3, "annual": True},
                           {"plan": "basic", "age": 41.5, "seats": 4, "annual": False}])
    kinds = {c.name: (c.type.value, c.nullable) for c in schema.columns}
    assert kinds == {"plan": ("string", False), "age": ("number", True),
                     "seats": ("integer", False), "annual": ("boolean", False)}
