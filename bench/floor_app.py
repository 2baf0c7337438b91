"""The HTTP floor's app: one Flask route that reads the body and answers 202 with an id, touching
neither SQL nor Redis. `bench/run_floor.py` serves it with predq's own gunicorn command line."""

from __future__ import annotations

import uuid

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/v1/jobs")
def accept() -> tuple[Response, int]:
    request.get_data(cache=False)
    return jsonify({"id": str(uuid.uuid4()), "status": "queued"}), 202
