"""Typed outputs: string and boolean labels survive the stored result chunk and become a typed
`prediction` column with one probability column per label."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from service.jobs import payloads
from service.jobs.typedresults import (
    csv_cell,
    labels_of,
    npy_dtype,
    probability_names,
    result_columns,
)
from service.models.registry import signature_of
from tests.support import typed


def test_string_labels_survive_the_stored_result_chunk_and_become_a_string_column() -> None:
    model, frame = typed.churn()
    labels = signature_of(model)["labels"]
    assert labels == ["churn", "stay"]
    result = {"predictions": np.asarray(model.predict(frame.head(5))),
              "probabilities": np.asarray(model.predict_proba(frame.head(5)))}
    back = payloads.decode_result(payloads.encode_result(result))
    assert list(back["predictions"]) == list(result["predictions"])
    columns = result_columns(back, labels)
    assert list(columns) == ["prediction", "p_churn", "p_stay"]
    assert columns["prediction"].type == pa.string()
    assert columns["prediction"].to_pylist() == list(result["predictions"])
    np.testing.assert_array_equal(columns["p_stay"].to_numpy(), result["probabilities"][:, 1])


def test_boolean_labels_stay_booleans() -> None:
    result = {"predictions": np.array([True, False]),
              "probabilities": np.array([[0.2, 0.8], [0.9, 0.1]])}
    back = payloads.decode_result(payloads.encode_result(result))
    labels = labels_of(np.array([False, True]))
    columns = result_columns(back, labels)
    assert columns["prediction"].type == pa.bool_() and list(columns) == [
        "prediction", "p_False", "p_True"]
    assert [csv_cell(v) for v in back["predictions"]] == ["true", "false"]


def test_regressor_predictions_are_float64_and_npy_is_for_number_labels_only() -> None:
    columns = result_columns({"predictions": np.array([1.5, 2.5])}, None)
    assert columns["prediction"].type == pa.float64() and list(columns) == ["prediction"]
    assert npy_dtype(None) == np.dtype("<f8")
    assert npy_dtype([0, 1, 2]) == np.dtype("<i8")
    assert npy_dtype(["churn", "stay"]) is None and npy_dtype([False, True]) is None


def test_labels_printing_alike_get_distinct_probability_columns() -> None:
    assert probability_names([True, "True", 1]) == ["p_True", "p_True_", "p_1"]
