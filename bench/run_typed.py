"""The typed scenarios (issue 27, `--only typed`): predq serving a scikit-learn Pipeline
fitted on a pandas DataFrame (`churn` of bench.models: two string columns one-hot encoded, a
nullable number and three integers imputed and scaled, a boolean, LogisticRegression).

- `single_row_typed`: one typed JSON row a job (about one `age` in ten null), as
  `single_row_lr` sends numbers; `vs_numeric` is its jobs/s over the numeric scenario's,
  measured in the same run (bench/__main__.py alternates their repetitions).
- `bulk_typed_parquet_ref` (a Parquet file by reference), `bulk_typed_parquet` and
  `bulk_typed_csv` (uploaded; the CSV's missing values are empty cells): rows/s from the first
  byte sent (or the submit) to the job's end, and for the Parquet runs the pipeline's own
  predict on DataFrames of the job's chunk size on all cores, measured beside each run
  (`ceiling_rows_s`, `vs_ceiling`).
- `bulk_typed_upload_10m`: the API's and the worker's peak memory over a 10M-row typed Parquet
  upload (QUICK: 1M rows, the same key), on a stack of its own.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from typing import Any

from sqlalchemy import Engine, text

from bench.ceiling import all_cores_on
from bench.models import TYPED, make_typed_model
from bench.procs import TreeSampler
from bench.run_bulk import CHUNK_ROWS, CSV, HOME, PARQUET, REF_CHUNK_ROWS, BulkClient
from bench.run_predq import predq_stack

#: Goals of issue 27, shown beside the figures (bench/__main__.py's table, docs/performance.md).
GOALS = {"single_row_typed.vs_numeric": ">= 0.8", "bulk_typed_parquet_ref.vs_ceiling": ">= 0.7",
         "bulk_typed_parquet.vs_ceiling": ">= 0.4",
         "bulk_typed_upload_10m.api_peak_rss_mb": "< 300"}
PART_ROWS = 1_000_000  # rows generated (and written) at a time


def typed_bodies(count: int, rows: int) -> list[bytes]:
    """`count` JSON job bodies of `rows` typed rows each, objects keyed by column name."""
    from service.models.demo_typed import churn_frame

    frame, _ = churn_frame(count * rows, seed=1)
    columns = {name: frame[name].tolist() for name in frame.columns}
    records = [{name: None if value != value else value  # NaN (a missing age): null
                for name, value in zip(columns, values, strict=True)}
               for values in zip(*columns.values(), strict=True)]
    return [json.dumps({"model": "bench", "inputs": records[i * rows:(i + 1) * rows]}).encode()
            for i in range(count)]


def single_row_figures(typed: dict[str, Any], numeric: dict[str, Any]) -> dict[str, Any]:
    """`single_row_typed`: the typed run's figures, the numeric run's beside it, the ratio."""
    typed["numeric"] = {k: numeric[k] for k in (
        "jobs_s", "submit_p50_ms", "submit_p99_ms", "completion_p50_ms", "completion_p99_ms",
        "cpu_s_per_1000_jobs", "cpu_s_per_1000_jobs_by_part", "n", "complete", "model")}
    typed["vs_numeric"] = round(typed["jobs_s"] / max(1e-9, numeric["jobs_s"]), 2)
    return typed


def _write_typed(directory: str, n: int, csv: bool) -> dict[str, str]:
    """n rows of the typed columns as Parquet (row groups of an upload's chunk) and, with
    `csv`, as CSV (empty cells where `age` is missing; booleans true/false)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from service.models.demo_typed import churn_frame

    schema = pa.schema([("plan", pa.string()), ("country", pa.string()), ("age", pa.float64()),
                        ("seats", pa.int64()), ("monthly_spend", pa.float64()),
                        ("support_tickets", pa.int64()), ("annual", pa.bool_())])
    paths = {PARQUET: os.path.join(directory, f"typed-{n}.parquet")}
    if csv:
        paths[CSV] = os.path.join(directory, f"typed-{n}.csv")
    with pq.ParquetWriter(paths[PARQUET], schema) as parquet, \
            open(paths.get(CSV, os.devnull), "w") as out:
        for part, start in enumerate(range(0, n, PART_ROWS)):
            frame, _ = churn_frame(min(PART_ROWS, n - start), seed=100 + part)
            parquet.write_table(pa.Table.from_pandas(frame, schema, preserve_index=False),
                                row_group_size=CHUNK_ROWS)
            if csv:
                frame["annual"] = frame["annual"].map({True: "true", False: "false"})
                frame.to_csv(out, index=False, header=start == 0, na_rep="")
    return paths


def _chunk_rows(engine: Engine) -> int:
    """The median rows per chunk of the latest job (chunk sizes follow the model's cost)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT n_rows FROM job_chunks WHERE job_id = "
            "(SELECT id FROM jobs ORDER BY created_at DESC LIMIT 1)")).scalars().all()
    return int(statistics.median(rows)) if rows else CHUNK_ROWS


def _planned_rows(engine: Engine, most: int) -> int:
    """The rows per chunk the API will cut the next job into, from the model's cost now."""
    from service.core.settings import Settings
    from service.jobs.chunksize import rows_for

    with engine.connect() as conn:
        cost = conn.execute(text("SELECT seconds_per_row FROM model_costs")).scalar()
    return rows_for(cost, Settings().bulk_chunk_seconds, most)


def _bulk(n: int, quick: bool) -> dict[str, dict[str, Any]]:
    """By reference, Parquet and CSV uploads of n rows on one stack, each Parquet run beside
    the pipeline's own predict on all cores at the job's chunk size."""
    from service.models.demo_typed import churn_frame

    ref_chunk = n // 2 if quick else REF_CHUNK_ROWS  # quick: a chunk per pool process
    model = make_typed_model()
    frame = churn_frame(max(4 * ref_chunk, 100_000), seed=7)[0]  # the ceiling's DataFrame
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="predq-typed-") as root:
        home = os.path.join(root, HOME)
        os.mkdir(home)
        paths = _write_typed(home, n, csv=True)
        warm = _write_typed(home, 4 * CHUNK_ROWS, csv=False)[PARQUET]
        env = {"PREDQ_MAX_DEPTH_BULK": "10000000", "PREDQ_DATA_ROOT": root,
               "PREDQ_BULK_CHUNK_ROWS": str(CHUNK_ROWS),
               "PREDQ_BULK_REF_CHUNK_ROWS": str(ref_chunk)}
        with predq_stack(TYPED, env) as (port, key, engine, api, worker), \
                TreeSampler([api, worker]) as sampler:
            run = BulkClient(port, key, sampler, accept=PARQUET)
            run.by_reference(os.path.basename(warm), 4 * CHUNK_ROWS)  # each process loads it
            for name, how in (("bulk_typed_parquet_ref", "ref"), ("bulk_typed_parquet", PARQUET),
                              ("bulk_typed_csv", CSV)):
                planned = _planned_rows(engine, ref_chunk if how == "ref" else CHUNK_ROWS)
                before = all_cores_on(model, frame, planned) if how != CSV else 0.0
                if how == "ref":
                    out[name] = run.by_reference(os.path.basename(paths[PARQUET]), n)
                else:
                    out[name] = run.upload(paths[how], how, n)
                chunk = _chunk_rows(engine)
                out[name]["chunk_rows"] = chunk
                if how != CSV:
                    after = all_cores_on(model, frame, chunk)
                    # Both sides' mean when the job was cut as planned; else the ceiling at
                    # the chunk size it had, after it.
                    ceiling = (before + after) / 2 if chunk == planned else after
                    out[name].update(ceiling_rows_s=round(ceiling),
                                     vs_ceiling=round(out[name]["rows_s"] / ceiling, 3))
    return out


def _large(n: int) -> dict[str, Any]:
    """A typed Parquet upload of n rows on a stack of its own: the API's and the worker's
    peak memory (the sum of each process tree's RSS, sampled every 0.2 s)."""
    with tempfile.TemporaryDirectory(prefix="predq-typed-large-") as root:
        path = _write_typed(root, n, csv=False)[PARQUET]
        env = {"PREDQ_MAX_DEPTH_BULK": "10000000", "PREDQ_BULK_CHUNK_ROWS": str(CHUNK_ROWS)}
        with predq_stack(TYPED, env) as (port, key, _engine, api, worker), \
                TreeSampler([api, worker]) as sampler:
            client = BulkClient(port, key, sampler, accept=PARQUET, split_peak=True)
            out = client.upload(path, PARQUET, n)
    out.update(api_peak_rss_mb=out["peak_rss_mb_api"],
               worker_peak_rss_mb=out["peak_rss_mb_worker"])
    return out


def bench_typed_bulk(quick: bool) -> dict[str, Any]:
    """The typed bulk keys (see module doc)."""
    out: dict[str, Any] = dict(_bulk(100_000 if quick else 1_000_000, quick))
    out["bulk_typed_upload_10m"] = _large(1_000_000 if quick else 10_000_000)
    return out


def typed_lines(results: dict[str, Any]) -> list[str]:
    """The typed keys in a few lines, each with its goal."""
    lines: list[str] = []
    single = results.get("single_row_typed")
    if single:
        lines += ["", f"typed pipeline, one row a job: {single['jobs_s']:.0f} jobs/s, numeric "
                      f"{single['numeric']['jobs_s']:.0f} beside it: x{single['vs_numeric']:.2f} "
                      f"(goal {GOALS['single_row_typed.vs_numeric']})"]
    bulk = [(k, v) for k, v in results.items() if k.startswith("bulk_typed_")]
    if bulk:
        lines += ["", "typed bulk jobs (first byte sent, or the submit by reference, to job "
                      "final):"]
    for name, r in bulk:
        goal = GOALS.get(f"{name}.vs_ceiling") or GOALS.get(f"{name}.api_peak_rss_mb")
        lines.append(
            f"  {name:<23} {r['rows']:>10,} rows {r['seconds']:>6.1f} s {r['rows_s']:>9,} rows/s"
            f", peak rss api/worker {r['peak_rss_mb_api']:.0f}/{r['peak_rss_mb_worker']:.0f} MB"
            + (f", {r['vs_ceiling']:.2f} of the ceiling {r['ceiling_rows_s']:,}/s at "
               f"{r['chunk_rows']:,} rows" if "vs_ceiling" in r else "")
            + (f" (goal {goal})" if goal else ""))
    return lines


if __name__ == "__main__":
    print(json.dumps(bench_typed_bulk("--quick" in sys.argv), indent=2))
