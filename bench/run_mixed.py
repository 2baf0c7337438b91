"""Interactive calls and a second tenant beside a bulk job: the `mixed` and `fair` keys.

`mixed`: synchronous one-row predicts (POST /v1/models/bench/predict, the LogisticRegression)
sent open loop at a fixed rate, first on an idle service, then while a bulk job of a heavy
RandomForest (300 trees, `rf300`) runs; and that job's rows/s beside them against alone.
`fair`: a second tenant's small bulk job submitted while the first tenant's big job runs, its
submit-to-done time against the same small job alone.

One stack for both, as the bench builds it (gunicorn API, one worker on every queue, Redis,
PostgreSQL) plus the beat that `predq up` runs (its reconciler promotes waiting jobs), with
predq's default admission limits. Bulk jobs go by reference (`input`: a .npy file under the
data root, priority bulk): the API reads only a header, so what the interactive calls meet is
the workers' queueing, not an upload's parsing. Every wait is bounded: a failed or late job
ends both scenarios with an `error` in their keys, and the stack is stopped.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.mixedstack import BIG_TENANT, SMALL_TENANT, MixedStack
from bench.run_predq import predq_stack
from service.core.settings import Settings

HEAVY = "rf300"
FAIR_DELAY_S = 1.0  # the small job is submitted this long after the big one started
N_FEATURES = 20


@dataclass(frozen=True)
class Sizes:
    """How big and how long: the full run's, or QUICK's."""

    big_rows: int  # tenant A's bulk job
    small_rows: int  # tenant B's job
    rate: float  # interactive predicts per second
    idle_s: float  # length of the idle measurement
    window_max_s: float  # longest measurement beside the bulk job (cut to the job's end)
    job_timeout_s: float  # longest any job may take before the scenario gives up
    rounds: int  # repetitions on the one stack; every figure is their median


FULL = Sizes(1_000_000, 10_000, 15.0, 30.0, 30.0, 900.0, 3)
SHARED = "shared"  # the inputs: a prefix of the data root every tenant reads
QUICK = Sizes(400_000, 10_000, 15.0, 10.0, 10.0, 300.0, 1)


def _write_rows(root: str, n: int, seed: int) -> str:
    """n rows of .npy in the data root's prefix shared with every tenant, written a million
    at a time; the name a tenant gives it (`@shared/...`)."""
    name = f"rows-{n}-{seed}.npy"
    os.makedirs(os.path.join(root, SHARED), exist_ok=True)
    out = np.lib.format.open_memmap(os.path.join(root, SHARED, name), mode="w+", dtype="<f8",
                                    shape=(n, N_FEATURES))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 1_000_000):
        stop = min(n, start + 1_000_000)
        out[start:stop] = rng.standard_normal((stop - start, N_FEATURES)).round(5)
    out.flush()
    del out
    return f"@{SHARED}/{name}"


def _prefixed(prefix: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in figures.items()}


def _beside_bulk(st: MixedStack, sizes: Sizes, big: str, alone_s: float) -> dict[str, Any]:
    """The interactive calls sent while the big job runs. They go on for longer than the job
    took alone (at most window_max_s); those sent after it ended are left out."""
    window = min(sizes.window_max_s, 1.5 * alone_s + 2.0)
    job_id, sent = st.submit(BIG_TENANT, HEAVY, big)
    calls = st.interactive(window, sizes.rate)
    during = st.wait(job_id, sent, sizes.big_rows, sizes.job_timeout_s)
    return {
        **_prefixed("interactive", st.figures(calls, during.finished)),
        "window_s": round(min(window, during.finished - calls.since), 1),
        "bulk_seconds": round(during.seconds, 2),
        "bulk_rows_s": round(during.rows_s),
    }


def _fair_round(st: MixedStack, sizes: Sizes, big: str, small: str) -> dict[str, Any]:
    """Tenant B's small job submitted FAIR_DELAY_S after tenant A's big job started."""
    small_alone = statistics.median(
        st.run_job(SMALL_TENANT, HEAVY, small, sizes.small_rows, sizes.job_timeout_s).seconds
        for _ in range(3))
    big_id, big_sent = st.submit(BIG_TENANT, HEAVY, big)
    st.wait_started(big_id, sizes.job_timeout_s)
    time.sleep(FAIR_DELAY_S)
    beside = st.run_job(SMALL_TENANT, HEAVY, small, sizes.small_rows, sizes.job_timeout_s)
    big_run = st.wait(big_id, big_sent, sizes.big_rows, sizes.job_timeout_s)
    return {
        "small_tenant_s": round(beside.seconds, 3),
        "small_alone_s": round(small_alone, 3),
        "big_running_when_small_done": big_run.finished > beside.finished,
        "big_seconds": round(big_run.seconds, 2),
    }


def _round(st: MixedStack, sizes: Sizes, files: dict[str, str], scenarios: tuple[str, ...]
           ) -> dict[str, dict[str, Any]]:
    """One repetition of each scenario asked for, idle measurement first."""
    out: dict[str, dict[str, Any]] = {}
    if "mixed" in scenarios:
        idle = st.figures(st.interactive(sizes.idle_s, sizes.rate))
        alone = st.run_job(BIG_TENANT, HEAVY, files["big"], sizes.big_rows, sizes.job_timeout_s)
        out["mixed"] = {**_prefixed("idle", idle),
                        "bulk_alone_seconds": round(alone.seconds, 2),
                        "bulk_alone_rows_s": round(alone.rows_s),
                        **_beside_bulk(st, sizes, files["big"], alone.seconds)}
    if "fair" in scenarios:
        out["fair"] = _fair_round(st, sizes, files["big"], files["small"])
    return out


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each numeric figure over the rounds; other values from the last round."""
    out = dict(rounds[-1])
    for key, value in rounds[-1].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = round(statistics.median(r[key] for r in rounds), 3)
    return out


def _ratios(name: str, figures: dict[str, Any]) -> None:
    """The goal keys, from the medians: p99 beside bulk over idle; rows/s over alone; small
    job's seconds beside the big one over alone."""
    if name == "mixed":
        figures["interactive_vs_idle"] = round(
            figures["interactive_p99_ms"] / max(1e-9, figures["idle_p99_ms"]), 2)
        figures["bulk_vs_alone"] = round(
            figures["bulk_rows_s"] / max(1e-9, figures["bulk_alone_rows_s"]), 3)
    else:
        figures["small_tenant_vs_alone"] = round(
            figures["small_tenant_s"] / max(1e-9, figures["small_alone_s"]), 2)


def _measure(sizes: Sizes, scenarios: tuple[str, ...]) -> dict[str, Any]:
    defaults = Settings()
    with tempfile.TemporaryDirectory(prefix="predq-mixed-") as root:
        files = {"big": _write_rows(root, sizes.big_rows, 21),
                 "small": _write_rows(root, sizes.small_rows, 22)}
        env = {"PREDQ_DATA_ROOT": root, "PREDQ_DATA_SHARED": f"*={SHARED}",
               # predq's defaults, which predq_stack raises:
               "PREDQ_MAX_DEPTH_NORMAL": str(defaults.max_depth_normal),
               "PREDQ_TENANT_QUEUE_SHARE": str(defaults.tenant_queue_share)}
        with predq_stack("lr", env, beat=True, others=(HEAVY,)) as (port, key, engine, _, _w):
            st = MixedStack(port, key, engine)
            st.warm_up(HEAVY, files["small"], sizes.small_rows, sizes.job_timeout_s)
            rounds = [_round(st, sizes, files, scenarios) for _ in range(sizes.rounds)]
    common = {"model": f"{HEAVY}: RandomForest, 300 trees, depth 8", "input": "by reference",
              "big_rows": sizes.big_rows, "small_rows": sizes.small_rows, "rate": sizes.rate,
              "repetitions": sizes.rounds}
    out: dict[str, Any] = {}
    for name in scenarios:
        out[name] = {**_median([r[name] for r in rounds]), **common}
        _ratios(name, out[name])
    return out


def bench_mixed(quick: bool, scenarios: tuple[str, ...] = ("mixed", "fair")) -> dict[str, Any]:
    """{"mixed": ..., "fair": ...} (those asked for); on any failure each holds `error`, so
    that the rest of the run keeps its figures."""
    sizes = QUICK if quick else FULL
    try:
        out = _measure(sizes, scenarios)
    except Exception as exc:  # noqa: BLE001 - a failed scenario must not cost the run the rest
        error = f"{type(exc).__name__}: {exc}"
        print(f"[bench] mixed/fair failed: {error}", file=sys.stderr)
        out = {name: {"error": error} for name in scenarios}
    for figures in out.values():
        figures["quick"] = quick
    return out


def mixed_lines(results: dict[str, Any]) -> list[str]:
    """The `mixed` and `fair` scenarios, in a few lines (or their error)."""
    lines: list[str] = []
    mixed, fair = results.get("mixed"), results.get("fair")
    for name, r in (("mixed", mixed), ("fair", fair)):
        if r and "error" in r:
            lines += ["", f"{name}: no figures: {r['error']}"]
    if mixed and "error" not in mixed:
        lines += ["", f"sync predicts at {mixed['rate']:g}/s beside a {mixed['big_rows']:,}-row "
                  f"bulk job ({mixed['model']}, {mixed['input']}): p50 "
                  f"{mixed['interactive_p50_ms']:.0f} ms, p99 {mixed['interactive_p99_ms']:.0f} "
                  f"ms; idle p50 {mixed['idle_p50_ms']:.1f} ms, p99 {mixed['idle_p99_ms']:.1f} ms "
                  f"(p99 x{mixed['interactive_vs_idle']:.1f}; goal <= 2)",
                  f"  their queue wait p50 {mixed['interactive_queue_wait_p50_ms']:.0f} ms "
                  f"(idle {mixed['idle_queue_wait_p50_ms']:.1f}); the bulk job "
                  f"{mixed['bulk_rows_s']:,.0f} rows/s beside them, "
                  f"{mixed['bulk_alone_rows_s']:,.0f} alone (x{mixed['bulk_vs_alone']:.2f}; "
                  "goal >= 0.8)"]
    if fair and "error" not in fair:
        lines += ["", f"fair: a second tenant's {fair['small_rows']:,}-row job beside the "
                  f"{fair['big_rows']:,}-row one {fair['small_tenant_s']:.2f} s, alone "
                  f"{fair['small_alone_s']:.2f} s (x{fair['small_tenant_vs_alone']:.1f}; "
                  "goal <= 2)"]
    return lines


if __name__ == "__main__":
    names = tuple(a for a in sys.argv[1:] if not a.startswith("-")) or ("mixed", "fair")
    print(json.dumps(bench_mixed("--quick" in sys.argv, names), indent=2))
