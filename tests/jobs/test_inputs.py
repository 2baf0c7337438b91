import numpy as np
import pytest

from service.core.errors import InvalidInput
from service.jobs.inputs import InputBounds, parse_inputs, parse_rows
from service.models.registry import ModelInfo
from service.models.schema import Column, ColumnType, InputSchema

IRIS = ModelInfo(
    id=1, name="iris", version="1", kind="classifier", n_features=4,
    feature_names=["sepal_length", "sepal_width", "petal_length", "petal_width"],
    labels=["setosa", "versicolor", "virginica"], sha256="0" * 64, artifact_path="x",
    sklearn_version=None,
)


def test_rows_as_lists_and_as_objects_give_the_same_floats() -> None:
    keyed = {"petal_width": 0.2, "sepal_length": 5, "petal_length": 1.4, "sepal_width": 3.5}
    assert parse_rows([[5, 3.5, 1.4, 0.2], keyed], IRIS, 10).tolist() == [[5.0, 3.5, 1.4, 0.2]] * 2
    fast = parse_rows([[5, 3.5, 1.4, 0.2]] * 3, IRIS, 10)
    assert fast.dtype == np.float64 and fast.tolist() == [[5.0, 3.5, 1.4, 0.2]] * 3


@pytest.mark.parametrize(
    ("inputs", "field", "reason"),
    [
        ([[1, 2, 3]], "inputs[0]", "has 3 features; model iris expects 4"),
        ([[1, 2, 3, 4], [1, 2, 3, 4, 5]], "inputs[1]", "has 5 features"),
        ([[1, 2, float("nan"), 4]], "inputs[0][2]", "finite"),
        ([[1, 2, float("inf"), 4]], "inputs[0][2]", "finite"),
        ([[1, 2, 10**400, 4]], "inputs[0][2]", "finite"),
        ([[1, 2, "3", 4]], "inputs[0][2]", "must be a number, got str"),
        ([[1, 2, True, 4]], "inputs[0][2]", "got bool"),
        ([{"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_widht": 1}],
         "inputs[0].petal_widht", "unknown feature 'petal_widht'"),
        ([{"sepal_length": 1, "sepal_width": 1, "petal_length": 1}],
         "inputs[0].petal_width", "missing feature 'petal_width'"),
        ([], "inputs", "at least one row"),
        ("1,2,3,4", "inputs", "must be a list of rows"),
        ([7], "inputs[0]", "must be a list of numbers or an object"),
        ([[1, 2, 3, 4]] * 11, "inputs", "11 rows; at most 10"),
    ],
)
def test_bad_inputs_are_refused_with_the_field_named(inputs: object, field: str,
                                                     reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_rows(inputs, IRIS, 10)
    assert info.value.field == field
    assert reason in info.value.reason


GAPS = ModelInfo(  # an array-fitted model that takes NaN: a RandomForest, HistGradientBoosting
    id=2, name="forest", version="1", kind="regressor", n_features=3,
    feature_names=["x0", "x1", "x2"], labels=None, sha256="0" * 64, artifact_path="x",
    sklearn_version=None, input_schema=InputSchema(tuple(
        Column(f"x{i}", ColumnType.NUMBER, True) for i in range(3)), False))


def test_a_model_that_takes_missing_numbers_reads_whole_rows_as_floats_and_gaps_as_nan() -> None:
    assert not GAPS.plain
    bounds = InputBounds(10)
    whole = parse_inputs([[1, 2.5, 3], [4, 5, 6]], GAPS, bounds)
    assert isinstance(whole, np.ndarray) and whole.tolist() == [[1.0, 2.5, 3.0], [4.0, 5.0, 6.0]]
    gaps = parse_inputs([[1, None, 3], {"x0": 4, "x1": 5}], GAPS, bounds)  # typed checks
    assert gaps.num_rows == 2 and np.isnan(gaps.column(1)[0].as_py() or float("nan"))
    assert gaps.column(2).to_pylist()[1] is None  # x2 absent: missing
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\[1\]"):
        parse_inputs([[1, "2", 3]], GAPS, bounds)
    with pytest.raises(InvalidInput, match="at most 10"):
        parse_inputs([[1, 2, 3]] * 11, GAPS, bounds)
