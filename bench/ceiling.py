"""Compute ceiling: raw model.predict rows/s, single-threaded in one process and on all cores."""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import tempfile
import time
from typing import Any

import joblib
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

BATCH_SIZES: tuple[int, ...] = (1, 16, 256, 4096, 100_000)

# Per-worker state for the all-cores pool (set by _pool_init, inherited by fork).
_W_MODEL: Any = None
_W_X: Any = None  # np.ndarray, or a pandas DataFrame


def blas_info() -> list[dict[str, Any]]:
    """Which BLAS/OpenMP kernels numpy/scikit-learn loaded (threadpoolctl), minus file paths."""
    keep = ("user_api", "internal_api", "version", "threading_layer", "architecture", "num_threads")
    return [{k: lib.get(k) for k in keep if k in lib} for lib in threadpool_info()]


def _features(model: Any, default: int) -> int:
    """Features the model expects (falls back to the caller's n_features)."""
    return int(getattr(model, "n_features_in_", default))


def _time_predict(
    model: Any, x: Any, batch: int, budget_s: float, repeats: int
) -> dict[str, float]:
    """Best-of-`repeats` rows/s for predict() on `batch`-row slices.

    Each repeat is bounded by budget_s.
    """
    n_rows = x.shape[0]
    model.predict(x[:batch])  # warm-up
    rates: list[float] = []
    per_call: list[float] = []
    for _ in range(repeats):
        calls, rows, start = 0, 0, time.perf_counter()
        deadline = start + budget_s
        while True:
            off = (calls * batch) % max(1, n_rows - batch + 1)
            model.predict(x[off : off + batch])
            calls += 1
            rows += batch
            now = time.perf_counter()
            if now >= deadline or calls >= 200_000:
                break
        elapsed = now - start
        rates.append(rows / elapsed)
        per_call.append(elapsed / calls * 1e6)
    return {
        "rows_s": round(max(rates), 1),
        "us_per_call": round(min(per_call), 2),
        "rows_s_median": round(statistics.median(rates), 1),
    }


def _pool_init(path: str, x: Any, barrier: Any) -> None:
    """Pool initializer: single-thread BLAS, load the model, then wait until all procs are ready."""
    global _W_MODEL, _W_X
    threadpool_limits(1)
    _W_MODEL = joblib.load(path)
    _W_X = x
    _W_MODEL.predict(x[:16])  # warm-up
    barrier.wait(timeout=120)


def _pool_predict(args: tuple[int, int]) -> int:
    """Predict `rows` rows in calls of `batch` rows on this worker's copy of the array.

    Returns the number of rows done.
    """
    rows, batch = args
    assert _W_X is not None
    n = _W_X.shape[0]
    done = 0
    while done < rows:
        off = done % max(1, n - batch + 1)
        _W_MODEL.predict(_W_X[off : off + batch])
        done += batch
    return done


def _all_cores(path: str, x: Any, plan: dict[int, int], procs: int) -> dict[str, float]:
    """rows/s for each batch size using `procs` forked processes.

    plan maps batch -> rows per process.
    """
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(procs + 1)
    out: dict[str, float] = {}
    with ctx.Pool(procs, initializer=_pool_init, initargs=(path, x, barrier)) as pool:
        barrier.wait(timeout=120)  # every process has loaded the model
        for batch, rows in plan.items():
            start = time.perf_counter()
            total = sum(pool.map(_pool_predict, [(rows, batch)] * procs, chunksize=1))
            out[str(batch)] = round(total / (time.perf_counter() - start), 1)
    return out


def all_cores_at(model: Any, batch: int, n_features: int, seconds: float = 1.0) -> float:
    """rows/s of `model.predict` on `batch`-row slices in one process per core (one BLAS
    thread each): what a worker of as many pool processes could reach at that chunk size."""
    x = np.random.default_rng(0).standard_normal((max(batch * 4, 100_000), n_features))
    return all_cores_on(model, x, batch, seconds)


def all_cores_on(model: Any, x: Any, batch: int, seconds: float = 1.0) -> float:
    """all_cores_at on the rows of `x` (an array, or a DataFrame for a model fitted on one:
    its slices are DataFrames of `batch` rows, as a user's own predict would be given)."""
    procs = os.cpu_count() or 1
    with threadpool_limits(1):
        rate = _time_predict(model, x, batch, seconds / 2, 1)["rows_s"]
    calls = max(1, int(rate * seconds / batch))
    with tempfile.TemporaryDirectory(prefix="predq-ceiling-") as tmp:
        path = os.path.join(tmp, "model.joblib")
        joblib.dump(model, path)
        return _all_cores(path, x, {batch: calls * batch}, procs)[str(batch)]


def measure_ceiling(
    models: dict[str, Any], n_features: int = 20, quick: bool = False
) -> dict[str, Any]:
    """Measure predict rows/s per model and batch size.

    Both in a single process (1 BLAS thread) and on all cores.

    Returns {"cpu_count", "blas", "batch_sizes", "models": {name: {"n_features", "single_process":
    {batch: {rows_s, us_per_call, rows_s_median}}, "all_cores": {batch: rows_s}}}}.
    """
    budget_s, repeats = (0.15, 2) if quick else (1.0, 3)
    max_rows = 100_000 if quick else 400_000
    procs = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {
        "cpu_count": procs,
        "blas": blas_info(),
        "blas_threads_in_timing": 1,
        "batch_sizes": list(BATCH_SIZES),
        "quick": quick,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="predq-ceiling-") as tmp:
        for name, model in models.items():
            nf = _features(model, n_features)
            x = rng.standard_normal((max_rows, nf))
            single: dict[str, dict[str, float]] = {}
            with threadpool_limits(1):
                for batch in BATCH_SIZES:
                    single[str(batch)] = _time_predict(model, x, batch, budget_s, repeats)
            # Size the all-cores run from the single-process rate: ~budget_s of work per process.
            plan: dict[int, int] = {}
            for batch in BATCH_SIZES:
                rate = single[str(batch)]["rows_s"]
                calls = max(1, int(rate * budget_s * 2 / batch))
                plan[batch] = calls * batch
            path = os.path.join(tmp, f"{name}.joblib")
            joblib.dump(model, path)
            result["models"][name] = {
                "n_features": nf,
                "single_process": single,
                "all_cores": {"processes": procs, **_all_cores(path, x, plan, procs)},
            }
    return result


def main() -> None:
    """CLI: python -m bench.ceiling [--quick].

    Prints the ceiling JSON for all benchmark and demo models.
    """
    import argparse
    import json

    from bench.models import make_demo_models, make_models

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    models = {**make_models(), **make_demo_models()}
    print(json.dumps(measure_ceiling(models, 20, args.quick), indent=2))


if __name__ == "__main__":
    main()
