"""`make bench`: predq side by side with a hand-written Celery service and the model ceiling.

Every figure is the median over the repetitions of one run (3, or 1 with --quick); the table is
printed and written to bench/results.json. `--only mixed,fair` runs the scenarios named and
replaces only their keys in that file (`--only typed`: the typed pipeline's, issue 27).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench.ceiling import blas_info, measure_ceiling
from bench.models import TYPED, make_demo_models, make_models
from bench.run_baseline import bench_baseline
from bench.run_bulk import bench_bulk
from bench.run_floor import bench_floor
from bench.run_mixed import bench_mixed, mixed_lines
from bench.run_predq import bench_predq
from bench.run_sync import bench_sync
from bench.run_typed import bench_typed_bulk, single_row_figures, typed_bodies, typed_lines

RESULTS = Path(__file__).parent / "results.json"


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each numeric figure over repetitions; other values from the last run."""
    out: dict[str, Any] = dict(runs[-1])
    for key, value in runs[-1].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = round(statistics.median(r[key] for r in runs), 2)
    out["repetitions"] = len(runs)
    return out


def repeat(reps: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return median_of([fn() for _ in range(reps)])


def machine() -> dict[str, Any]:
    """Cores, memory and the versions of everything on the measured path."""
    from importlib.metadata import version

    packages = ("numpy", "scikit-learn", "celery", "celery-batches", "kombu", "redis", "flask",
                "gunicorn", "sqlalchemy", "psycopg")
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: version(name) for name in packages},
        "blas": [f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')}"
                 for b in blas_info()],
    }


SIZES = {True: (1, 2000, 1000), False: (3, 20000, 10000)}  # quick: reps, n_single, n_base
CONCURRENCY = 32


def run_ceiling(results: dict[str, Any], quick: bool) -> None:
    step("ceiling")
    # QUICK (under 3 minutes): the ceilings of the models the scenarios run, not the demo's.
    models = make_models() if quick else {**make_models(), **make_demo_models()}
    results["ceiling"] = measure_ceiling(models, 20, quick)


def run_floor(results: dict[str, Any], quick: bool) -> None:
    reps, n_single, _ = SIZES[quick]
    step("http floor")
    results["http_floor"] = repeat(reps, partial(bench_floor, 2 * n_single, CONCURRENCY, quick))


def run_single_row(results: dict[str, Any], quick: bool) -> None:
    reps, n_single, n_base = SIZES[quick]
    c = CONCURRENCY
    for model in ("lr", "rf"):
        step(f"baseline {model}")
        base = repeat(reps, partial(bench_baseline, n_base, c, quick, model))
        step(f"predq single-row {model}")
        ours = repeat(reps, partial(bench_predq, n_single, c, quick, model))
        ours["baseline"] = {k: base[k] for k in (
            "jobs_s", "submit_p50_ms", "submit_p99_ms", "completion_p50_ms", "completion_p99_ms",
            "rss_mb_api", "rss_mb_worker", "cpu_s_per_1000_jobs", "n", "complete")}
        ours["vs_baseline"] = round(ours["jobs_s"] / base["jobs_s"], 2)
        # The same server configuration answering a route that does nothing: what is left.
        if "http_floor" in results:
            ours["vs_floor"] = round(ours["jobs_s"] / results["http_floor"]["req_s"], 2)
        # Submit latency at the rate where the baseline saturates (open loop, paced clients).
        step(f"predq single-row {model} at the baseline's rate")
        paced = repeat(reps, partial(bench_predq, n_base // 4, c, quick, model,
                                     rate=base["jobs_s"]))
        ours["at_baseline_rate"] = {k: paced[k] for k in (
            "rate", "jobs_s", "submit_p50_ms", "submit_p99_ms", "completion_p50_ms",
            "completion_p99_ms", "cpu_s_per_1000_jobs")}
        results[f"single_row_{model}"] = ours


def run_few_rows(results: dict[str, Any], quick: bool) -> None:
    reps = SIZES[quick][0]
    for rows, n in ((10, 1000 if quick else 5000), (100, 200 if quick else 1000)):
        step(f"predq few-rows {rows}")
        results[f"few_rows_{rows}"] = repeat(
            reps, partial(bench_predq, n, CONCURRENCY, quick, "lr", rows))


def run_sync(results: dict[str, Any], quick: bool) -> None:
    step("predq synchronous predict")
    results["sync_predict"] = bench_sync(quick)


def run_bulk(results: dict[str, Any], quick: bool) -> None:
    step("predq bulk jobs")
    results.update(bench_bulk(quick))  # bulk_<model>_<format>[_ref], and `bulk`


def run_typed(results: dict[str, Any], quick: bool) -> None:
    """The typed pipeline's keys (bench/run_typed.py). Its single-row runs alternate with the
    numeric scenario's (single_row_lr's predq runs, again): a noisy minute moves both."""
    reps, n_single, _ = SIZES[quick]
    typed, numeric = [], []
    for rep in range(reps):
        step(f"predq single-row lr, beside typed ({rep + 1}/{reps})")
        numeric.append(bench_predq(n_single, CONCURRENCY, quick, "lr"))
        step(f"predq single-row typed ({rep + 1}/{reps})")
        typed.append(bench_predq(n_single, CONCURRENCY, quick, TYPED, make_bodies=typed_bodies))
    results["single_row_typed"] = single_row_figures(median_of(typed), median_of(numeric))
    step("predq typed bulk jobs")
    results.update(bench_typed_bulk(quick))  # bulk_typed_*


# In run order; `mixed` and `fair` share one stack (bench/run_mixed.py).
SECTIONS: dict[str, Callable[[dict[str, Any], bool], None]] = {
    "ceiling": run_ceiling, "floor": run_floor, "single_row": run_single_row,
    "few_rows": run_few_rows, "sync": run_sync, "bulk": run_bulk, "typed": run_typed,
}
MIXED = ("mixed", "fair")


def run(quick: bool, only: tuple[str, ...] = (*SECTIONS, *MIXED)) -> dict[str, Any]:
    """Every scenario named in `only`, in the order of SECTIONS, then mixed and fair."""
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name, section in SECTIONS.items():
        if name in only:
            section(results, quick)
    mixed = tuple(name for name in MIXED if name in only)
    if mixed:
        step(f"predq beside a bulk job: {', '.join(mixed)}")
        results.update(bench_mixed(quick, mixed))
    return results


def step(name: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)


def table(results: dict[str, Any]) -> str:
    lines = [
        f"predq benchmark ({'quick' if results['quick'] else 'full'}), "
        f"{results['machine']['cores']} cores, Python {results['machine']['python']}",
        "",
    ]
    lines.append(
        f"{'scenario':<18}{'jobs/s':>9}{'rows/s':>10}{'baseline':>10}{'x':>6}{'floor':>7}"
        f"{'submit p50/p99 ms':>20}{'done p50/p99 ms':>18}{'cpu ms/job':>11}"
        f"{'rss api/wrk MB':>16}"
    )
    for name in ("single_row_lr", "single_row_rf", "few_rows_10", "few_rows_100"):
        r = results.get(name)
        if not r:
            continue
        base = r.get("baseline", {})
        lines.append(
            f"{name:<18}{r['jobs_s']:>9.0f}{r['rows_s']:>10.0f}"
            f"{base.get('jobs_s', float('nan')):>10.0f}{r.get('vs_baseline', float('nan')):>6.1f}"
            f"{(format(r['vs_floor'], '>7.2f') if 'vs_floor' in r else ''):>7}"
            f"{r['submit_p50_ms']:>10.1f}/{r['submit_p99_ms']:<9.1f}"
            f"{r['completion_p50_ms']:>8.0f}/{r['completion_p99_ms']:<9.0f}"
            f"{r['cpu_s_per_1000_jobs']:>11.2f}{r['rss_mb_api']:>8.0f}/{r['rss_mb_worker']:<7.0f}"
        )
        paced = r.get("at_baseline_rate")
        if paced:
            lines.append(
                f"{'  at base rate':<18}{paced['jobs_s']:>9.0f}{'':>10}{'':>10}{'':>13}"
                f"{paced['submit_p50_ms']:>10.1f}/{paced['submit_p99_ms']:<9.1f}"
                f"{paced['completion_p50_ms']:>8.0f}/{paced['completion_p99_ms']:<9.0f}"
                f"{paced['cpu_s_per_1000_jobs']:>11.2f}")
        if base:
            lines.append(
                f"{'  baseline':<18}{base['jobs_s']:>9.0f}{'':>10}{'':>10}{'':>13}"
                f"{base['submit_p50_ms']:>10.1f}/{base['submit_p99_ms']:<9.1f}"
                f"{base['completion_p50_ms']:>8.0f}/{base['completion_p99_ms']:<9.0f}"
                f"{base['cpu_s_per_1000_jobs']:>11.2f}"
                f"{base['rss_mb_api']:>8.0f}/{base['rss_mb_worker']:<7.0f}"
            )
    floor = results.get("http_floor")
    if floor:
        lines += ["", f"http floor (predq's server configuration, a route that does nothing): "
                  f"{floor['req_s']:.0f} req/s, p50 {floor['p50_ms']:.1f} ms, p99 "
                  f"{floor['p99_ms']:.1f} ms, cpu {floor['cpu_ms_per_request']:.2f} ms/request; "
                  "the 'floor' column is jobs/s over it"]
    sync = results.get("sync_predict")
    if sync:
        light = sync["light_load"]
        lines += ["", f"synchronous predict ({sync['model']}, one row): at {light['rate']}/s "
                  f"p50 {light['p50_ms']:.1f} ms, p99 {light['p99_ms']:.1f} ms; p99 under 100 ms "
                  f"up to {sync['max_rate_p99_under_100ms']}/s"]
        lines += [f"  {s['rate']:>6}/s offered: {s['answered_s']:>7.1f}/s answered, p50 "
                  f"{s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, {s['not_200']} not 200"
                  for s in sync["steps"]]
    bulk = [(k, v) for k, v in results.items()
            if k.startswith("bulk_") and not k.startswith("bulk_typed_")]
    if bulk:
        lines += ["", "bulk jobs (20 features, chunks of 10,000 rows; first byte sent, or the "
                      "submit by reference, to job final):"]
        lines += [f"  {k:<16} {r['rows']:>9,} rows {r['seconds']:>6.1f} s {r['rows_s']:>10,} "
                  f"rows/s  result .npy {r['result_download_s']:.1f} s"
                  + (f" ({r['download_mb_s']:,} MB/s)" if "download_mb_s" in r else "")
                  + ", peak rss api/worker "
                  f"{r['peak_rss_mb_api']:.0f}/{r['peak_rss_mb_worker']:.0f} MB"
                  + (f", {r['vs_ceiling']:.2f} of the ceiling {r['ceiling_rows_s']:,}/s"
                     if "vs_ceiling" in r else "") for k, r in bulk]
    lines += typed_lines(results)
    lines += mixed_lines(results)
    if "ceiling" in results:
        lines += ["", "ceiling: model.predict rows/s (one process | all cores)"]
    for name, m in results.get("ceiling", {}).get("models", {}).items():
        one = m["single_process"]
        cells = "  ".join(
            f"{b}: {one[b]['rows_s']:,.0f} | {m['all_cores'].get(b, 0):,.0f}" for b in one
        )
        lines.append(f"  {name:<9}{cells}")
    return "\n".join(lines)


def write(results: dict[str, Any], only: tuple[str, ...] | None) -> None:
    """results.json; a run of some scenarios (--only) replaces only their keys in it."""
    if only is not None and RESULTS.exists():
        merged = json.loads(RESULTS.read_text())
        new = {k: v for k, v in results.items() if k not in ("machine", "quick", "started")}
        merged.update(new)
        merged.setdefault("partial_runs", []).append(
            {"keys": sorted(new), "quick": results["quick"], "started": results["started"]})
        results = merged
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller N, one repetition")
    names = (*SECTIONS, *MIXED)
    parser.add_argument("--only", metavar="NAMES",
                        help=f"comma-separated scenarios, of {','.join(names)}: only their keys "
                             "of results.json are replaced")
    args = parser.parse_args()
    only = None if args.only is None else tuple(n.strip() for n in args.only.split(","))
    unknown = [n for n in only or () if n not in names]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {','.join(names)}")
    results = run(args.quick, only or names)
    write(results, only)
    print(table(results))
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
