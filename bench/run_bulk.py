"""Bulk jobs: one CSV (and one .npy) body of N rows through POST /v1/jobs, timed from the first
byte sent to the last chunk committed, with the API's and worker's peak memory (the upload is
streamed, so the API's should not grow with N), then the result streamed back as .npy."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import requests

from bench.procs import TreeSampler
from bench.run_predq import predq_stack

N_FEATURES = 20


def _write_inputs(directory: str, n: int) -> dict[str, str]:
    rows = np.random.default_rng(4).standard_normal((n, N_FEATURES)).round(5)
    csv_path = os.path.join(directory, "rows.csv")
    with open(csv_path, "w") as out:
        out.write(",".join(f"x{i}" for i in range(N_FEATURES)) + "\n")
        for start in range(0, n, 50_000):
            np.savetxt(out, rows[start:start + 50_000], delimiter=",", fmt="%.5f")
    npy_path = os.path.join(directory, "rows.npy")
    np.save(npy_path, rows)
    return {"text/csv": csv_path, "application/x-npy": npy_path}


def _one(port: int, key: str, path: str, mimetype: str, n: int, sampler: TreeSampler,
         ) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    sampler.reset_peak()
    cpu_before = sampler.cpu_seconds()
    started = time.monotonic()
    with open(path, "rb") as body:
        answer = requests.post(f"{base}/v1/jobs?model=bench", data=body, timeout=3600,
                               headers={**auth, "Content-Type": mimetype})
    uploaded = time.monotonic()
    answer.raise_for_status()
    job_id = answer.json()["id"]
    while True:
        job = requests.get(f"{base}/v1/jobs/{job_id}", headers=auth, timeout=30).json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    done = time.monotonic()
    result = requests.get(f"{base}/v1/jobs/{job_id}/result", timeout=600,
                          headers={**auth, "Accept": "application/x-npy"})
    fetched = time.monotonic()
    predictions = np.load(io.BytesIO(result.content))
    return {
        "format": mimetype, "rows": n, "status": job["status"],
        "complete": job["status"] == "succeeded" and len(predictions) == n,
        "body_mb": round(os.path.getsize(path) / 2**20, 1),
        "upload_s": round(uploaded - started, 2),
        "upload_rows_s": round(n / (uploaded - started)),
        "total_s": round(done - started, 2),
        "rows_s": round(n / (done - started)),
        "result_download_s": round(fetched - done, 2),
        "cpu_s": round(sampler.cpu_seconds() - cpu_before, 2),
        "peak_rss_mb_api": sampler.peak_rss_mb("api"),
        "peak_rss_mb_worker": sampler.peak_rss_mb("worker"),
    }


def bench_bulk(quick: bool) -> dict[str, Any]:
    n = 200_000 if quick else 1_000_000
    env = {"PREDQ_MAX_DEPTH_BULK": "10000000"}
    with tempfile.TemporaryDirectory(prefix="predq-bulk-") as tmp, \
            predq_stack("lr", env) as (port, key, _engine, api, worker):
        paths = _write_inputs(tmp, n)
        with TreeSampler([api, worker]) as sampler:
            runs = [_one(port, key, path, mimetype, n, sampler)
                    for mimetype, path in paths.items()]
    return {"rows": n, "chunk_rows": 10_000, "runs": runs}


if __name__ == "__main__":
    print(json.dumps(bench_bulk("--quick" in sys.argv), indent=2))
