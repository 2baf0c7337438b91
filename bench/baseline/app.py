"""Baseline Flask API: POST /predict enqueues one Celery task per request and returns its id."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, jsonify, request

from bench.baseline.tasks import predict

N_FEATURES = 20

app = Flask(__name__)


@app.get("/health")
def health() -> Any:
    """Liveness probe."""
    return jsonify(status="ok")


@app.post("/predict")
def submit() -> Any:
    """Validate {"inputs": [[20 floats]]}, enqueue the prediction and answer 202 {"id": task_id}."""
    payload = request.get_json(silent=True)
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], list):
        return jsonify(error='expected {"inputs": [[...]]} with exactly one row'), 400
    row = inputs[0]
    if len(row) != N_FEATURES or not all(isinstance(v, (int, float)) for v in row):
        return jsonify(error=f"row must be {N_FEATURES} numbers"), 400
    result = predict.apply_async(args=[row, time.time()])
    return jsonify(id=result.id), 202
