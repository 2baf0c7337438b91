"""Bulk chunks are stored as binary arrays; chunks stored before (zlib of JSON, zlib of
float64 rows) are still read."""

from __future__ import annotations

import json
import zlib

import numpy as np

from service.jobs import payloads


def test_rows_are_stored_raw_and_old_compressed_rows_still_read() -> None:
    rows = np.random.default_rng(1).standard_normal((1000, 7))
    stored = payloads.encode_rows(rows)
    assert len(stored) == len(payloads.RAW) + rows.nbytes  # random floats: not compressed
    assert np.array_equal(payloads.decode_rows(stored, 1000), rows)
    old = zlib.compress(rows.astype("<f8").tobytes(), 1)
    assert np.array_equal(payloads.decode_rows(old, 1000), rows)


def test_results_round_trip_as_arrays_labels_compressed_floats_not() -> None:
    labels = np.array(["setosa", "virginica"] * 5000)
    probabilities = np.random.default_rng(2).random((10_000, 3))
    stored = payloads.encode_result({"predictions": labels, "probabilities": probabilities})
    assert probabilities.nbytes < len(stored) < probabilities.nbytes + 20_000
    back = payloads.decode_result(stored)
    assert back["predictions"].tolist() == labels.tolist()
    assert np.array_equal(back["probabilities"], probabilities)
    ints = payloads.decode_result(payloads.encode_result({"predictions": np.arange(5)}))
    assert ints["predictions"].dtype == np.int64 and ints["predictions"].tolist() == [0, 1, 2,
                                                                                     3, 4]


def test_an_old_json_result_and_an_object_array_are_read_as_lists() -> None:
    old = zlib.compress(json.dumps({"predictions": [1.5, 2.5]}).encode(), 1)
    assert payloads.decode_result(old) == {"predictions": [1.5, 2.5]}
    mixed = np.array([1, "a", None], dtype=object)
    assert payloads.decode_result(payloads.encode_result({"predictions": mixed})) == \
        {"predictions": [1, "a", None]}
    assert payloads.as_lists({"p": np.array([1.0]), "q": [2]}) == {"p": [1.0], "q": [2]}
