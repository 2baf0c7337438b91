"""Bulk jobs end to end, one key each in results.json: `.npy`, CSV, Parquet and Arrow bodies
uploaded through POST /v1/jobs (timed from the first byte sent), and `.npy` files named by
reference under the data root (timed from the submit), each until the job is final; with the
API's and the worker's peak memory, and for the random forest the model's own predict on all
cores at the job's chunk size, measured in the same run (`ceiling_rows_s`, `vs_ceiling`)."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import requests

from bench.ceiling import all_cores_at
from bench.models import make_models
from bench.procs import TreeSampler
from bench.run_predq import predq_stack

N_FEATURES = 20
CHUNK_ROWS = 10_000
REF_CHUNK_ROWS = 100_000  # PREDQ_BULK_REF_CHUNK_ROWS: jobs by reference
NPY, CSV = "application/x-npy", "text/csv"
HOME = "bench"  # the directory of tenant `bench` (predq_stack's key) under the data root
PARQUET, ARROW = "application/vnd.apache.parquet", "application/vnd.apache.arrow.stream"


def _write_inputs(directory: str, n: int, formats: list[str]) -> dict[str, str]:
    """The same n rows in each format asked for; Parquet in row groups of a chunk."""
    rows = np.random.default_rng(4).standard_normal((n, N_FEATURES)).round(5)
    names = [f"x{i}" for i in range(N_FEATURES)]
    paths = {NPY: os.path.join(directory, f"rows-{n}.npy")}
    np.save(paths[NPY], rows)
    if CSV in formats:
        paths[CSV] = os.path.join(directory, f"rows-{n}.csv")
        with open(paths[CSV], "w") as out:
            out.write(",".join(names) + "\n")
            for start in range(0, n, 50_000):
                np.savetxt(out, rows[start:start + 50_000], delimiter=",", fmt="%.5f")
    if PARQUET in formats or ARROW in formats:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: rows[:, i] for i, name in enumerate(names)})
        paths[PARQUET] = os.path.join(directory, f"rows-{n}.parquet")
        pq.write_table(table, paths[PARQUET], row_group_size=CHUNK_ROWS)
        paths[ARROW] = os.path.join(directory, f"rows-{n}.arrows")
        with pa.OSFile(paths[ARROW], "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table, max_chunksize=65_536)
    return paths


class BulkClient:
    """One stack's API: submit a job, wait for it, fetch its result."""

    def __init__(self, port: int, key: str, sampler: TreeSampler, accept: str = NPY,
                 split_peak: bool = False) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.auth = {"Authorization": f"Bearer {key}"}
        self.sampler = sampler
        self.accept = accept  # the result's format: .npy holds numeric predictions only
        #: Also the API's peak until the job is final, without the result's download.
        self.split_peak = split_peak

    def upload(self, path: str, mimetype: str, n: int) -> dict[str, Any]:
        def send() -> requests.Response:
            with open(path, "rb") as body:
                return requests.post(f"{self.base}/v1/jobs?model=bench", data=body,
                                     timeout=3600,
                                     headers={**self.auth, "Content-Type": mimetype})
        out = self._timed(send, n)
        out.update(format=mimetype, body_mb=round(os.path.getsize(path) / 2**20, 1))
        return out

    def by_reference(self, name: str, n: int) -> dict[str, Any]:
        def send() -> requests.Response:
            return requests.post(f"{self.base}/v1/jobs", json={"model": "bench", "input": name},
                                 headers=self.auth, timeout=600)
        out = self._timed(send, n)
        out.update(format=f"{name} by reference")
        return out

    def _timed(self, send: Callable[[], requests.Response], n: int) -> dict[str, Any]:
        self.sampler.reset_peak()
        cpu_before = self.sampler.cpu_seconds()
        started = time.monotonic()
        answer = send()
        submitted = time.monotonic()
        answer.raise_for_status()
        job_id = answer.json()["id"]
        while True:
            job = requests.get(f"{self.base}/v1/jobs/{job_id}", headers=self.auth,
                               timeout=30).json()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.02)
        done = time.monotonic()
        job_peak_api = self.sampler.peak_rss_mb("api")  # before the result is fetched
        result = requests.get(f"{self.base}/v1/jobs/{job_id}/result", timeout=600,
                              headers={**self.auth, "Accept": self.accept})
        fetched = time.monotonic()
        predicted = _rows_in(result.content, self.accept) if result.ok else 0
        download_s = max(1e-9, fetched - done)
        return {
            "rows": n, "status": job["status"],
            "complete": job["status"] == "succeeded" and predicted == n,
            "seconds": round(done - started, 2),
            "rows_s": round(n / (done - started)),
            "upload_s": round(submitted - started, 2),
            "upload_rows_s": round(n / max(1e-9, submitted - started)),
            "total_s": round(done - started, 2),  # the key's name before `seconds`
            "result_download_s": round(fetched - done, 2),
            "result_mb": round(len(result.content) / 2**20, 1),
            "download_mb_s": round(len(result.content) / 2**20 / download_s),
            "cpu_s": round(self.sampler.cpu_seconds() - cpu_before, 2),
            "peak_rss_mb_api": self.sampler.peak_rss_mb("api"),
            "peak_rss_mb_worker": self.sampler.peak_rss_mb("worker"),
            **({"peak_rss_mb_api_until_final": job_peak_api} if self.split_peak else {}),
        }


def _rows_in(body: bytes, accept: str) -> int:
    """Rows of a result body: a .npy array's, or a Parquet table's."""
    if accept == PARQUET:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(io.BytesIO(body)).metadata.num_rows)
    return len(np.load(io.BytesIO(body)))


def _stack(model: str, root: str, plan: list[tuple[str, str]], paths: dict[str, str], n: int,
           ceiling_of: Any = None, ref_chunk: int = REF_CHUNK_ROWS,
           large: tuple[str, str, int] | None = None) -> dict[str, dict[str, Any]]:
    """Run each (key, body) of `plan` on one stack; with `ceiling_of` (the model), each run
    is compared with the model's own predict on all cores at its chunk size. `large` (key,
    .npy path, rows): one more upload, last, for the memory bounds of a very large job."""
    env = {"PREDQ_MAX_DEPTH_BULK": "10000000", "PREDQ_DATA_ROOT": root,
           "PREDQ_BULK_CHUNK_ROWS": str(CHUNK_ROWS),
           "PREDQ_BULK_REF_CHUNK_ROWS": str(ref_chunk)}
    out: dict[str, dict[str, Any]] = {}
    with predq_stack(model, env) as (port, key, _engine, api, worker), \
            TreeSampler([api, worker]) as sampler:
        run = BulkClient(port, key, sampler)
        home = os.path.join(root, HOME)  # a tenant names its files relative to its directory
        warm = os.path.join(home, f"warm-{model}.npy")  # each pool process loads the model
        np.save(warm, np.load(paths[NPY], mmap_mode="r")[:4 * CHUNK_ROWS])
        run.by_reference(os.path.basename(warm), 4 * CHUNK_ROWS)
        for name, how in plan:
            chunk = ref_chunk if how == "ref" else CHUNK_ROWS
            # The ceiling next to the run it is compared with: other load on the machine
            # moves both alike (measured with the stack idle, a second either side).
            before = all_cores_at(ceiling_of, chunk, N_FEATURES) if ceiling_of else 0.0
            if how == "ref":
                out[name] = run.by_reference(os.path.relpath(paths[NPY], home), n)
            else:
                out[name] = run.upload(paths[how], how, n)
            if ceiling_of is not None:
                ceiling = (before + all_cores_at(ceiling_of, chunk, N_FEATURES)) / 2
                out[name].update(chunk_rows=chunk, ceiling_rows_s=round(ceiling),
                                 vs_ceiling=round(out[name]["rows_s"] / ceiling, 3))
        if large is not None:
            name, path, rows = large
            out[name] = run.upload(path, NPY, rows)
    return out


def _write_large(directory: str, n: int) -> str:
    """n rows of .npy written a million at a time (10M rows are 1.6 GB)."""
    path = os.path.join(directory, f"rows-{n}.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype="<f8", shape=(n, N_FEATURES))
    rng = np.random.default_rng(10)
    for start in range(0, n, 1_000_000):
        stop = min(n, start + 1_000_000)
        out[start:stop] = rng.standard_normal((stop - start, N_FEATURES)).round(5)
    out.flush()
    del out
    return path


def bench_bulk(quick: bool) -> dict[str, Any]:
    """Every bulk key, and `bulk` (the uploads of the LR model, as before) for older readers."""
    n_lr = 100_000 if quick else 1_000_000  # quick: the whole `make bench` in 3 minutes
    n_rf = n_lr
    ref_chunk = n_lr // 2 if quick else REF_CHUNK_ROWS  # quick: a chunk per pool process
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="predq-bulk-") as root:
        home = os.path.join(root, HOME)  # inputs by reference: in the tenant's directory
        os.mkdir(home)
        paths = _write_inputs(home, n_lr, [CSV, PARQUET, ARROW])
        results.update(_stack("lr", root, [
            ("bulk_lr_npy_ref", "ref"), ("bulk_lr_npy", NPY), ("bulk_lr_csv", CSV),
            ("bulk_lr_parquet", PARQUET), ("bulk_lr_arrow", ARROW)], paths, n_lr,
            ref_chunk=ref_chunk))
        if not quick:
            # A 10M-row upload, for the API's and the worker's memory bounds and the result's
            # download speed at a size where anything held whole would show. On a stack of
            # its own: after the Parquet and Arrow uploads the API process keeps the memory
            # they took (2026-12-07: 285 MB measured after them, 154 MB alone).
            large = ("bulk_lr_npy_10m", _write_large(home, 10_000_000), 10_000_000)
            results.update(_stack("lr", root, [], paths, n_lr, large=large))
        rf_paths = paths if n_rf == n_lr else _write_inputs(home, n_rf, [])
        results.update(_stack("rf", root, [("bulk_rf_npy_ref", "ref"), ("bulk_rf_npy", NPY)],
                              rf_paths, n_rf, make_models()["rf"], ref_chunk))
    results["bulk"] = {"rows": n_lr, "chunk_rows": CHUNK_ROWS,
                       "runs": [results["bulk_lr_csv"], results["bulk_lr_npy"]]}
    return results


if __name__ == "__main__":
    print(json.dumps(bench_bulk("--quick" in sys.argv), indent=2))
