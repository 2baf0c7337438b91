"""How two versions of a model differ on live traffic: over the jobs one answered as their
version and the other as their shadow (either way round), the share of rows with equal
predictions (classifiers, with the per-label confusion) or the absolute differences
(regressors), and each version's latency and failures. Streams the newest pairs (single jobs,
then bulk jobs chunk by chunk): memory holds one number per pair and one chunk's rows, never
a job's.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from service.core.errors import InvalidInput
from service.core.states import JobStatus
from service.core.times import as_utc
from service.jobs import payloads
from service.models.registry import ModelInfo
from service.store.db import job_chunks, jobs, shadow_chunk_results, shadow_results

DEFAULT_PAIRS = 10_000
MAX_PAIRS = 100_000
_EQUAL = 1e-9  # regressors: predictions this close (relative to 1 or the value) agree


@dataclass
class _Version:
    latencies: list[float] = field(default_factory=list)  # seconds
    answered: int = 0
    failures: int = 0

    def public(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {"answered": self.answered, "failures": self.failures,
                "latency_ms": {"p50": _percentile(ordered, 50), "p99": _percentile(ordered, 99)}}


@dataclass
class _Tally:
    kind: str
    jobs: int = 0
    rows: int = 0
    equal: int = 0
    abs_sum: float = 0.0
    abs_max: float = 0.0
    confusion: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def add(self, base: Sequence[Any], cand: Sequence[Any], job: bool = True) -> None:
        """One job's (or, `job` False, one more chunk's) predictions by both versions."""
        if len(base) != len(cand):
            return  # cannot happen for one job's rows; never let it skew the figures
        self.jobs += job
        self.rows += len(base)
        for b, c in zip(base, cand, strict=True):
            if self.kind == "classifier":
                self.equal += b == c
                self.confusion[str(b)][str(c)] += 1
            else:
                diff = abs(float(b) - float(c))
                self.abs_sum += diff
                self.abs_max = max(self.abs_max, diff)
                self.equal += diff <= _EQUAL * max(1.0, abs(float(b)))


def compare(conn: Connection, baseline: ModelInfo, candidate: ModelInfo,
            limit: int = DEFAULT_PAIRS) -> dict[str, Any]:
    """The report of `candidate` against `baseline` over the newest `limit` shadowed jobs."""
    if baseline.name != candidate.name or baseline.id == candidate.id:
        raise InvalidInput("candidate", "another version of the same model as the baseline")
    if baseline.kind != candidate.kind:
        raise InvalidInput("candidate", f"a {candidate.kind} cannot be compared with a "
                                        f"{baseline.kind}")
    b, c = baseline.id, candidate.id
    stmt = (select(jobs.c.model_id, jobs.c.status, jobs.c.result, jobs.c.started_at,
                   jobs.c.finished_at, shadow_results.c.result.label("s_result"),
                   shadow_results.c.error.label("s_error"), shadow_results.c.seconds)
            .join(shadow_results, shadow_results.c.job_id == jobs.c.id)
            .where(or_(and_(jobs.c.model_id == b, shadow_results.c.model_id == c),
                       and_(jobs.c.model_id == c, shadow_results.c.model_id == b)),
                   jobs.c.status.in_([JobStatus.SUCCEEDED.value, JobStatus.FAILED.value]))
            .order_by(shadow_results.c.created_at.desc()).limit(limit)
            .execution_options(yield_per=500))
    tally = _Tally(baseline.kind)
    versions = {b: _Version(), c: _Version()}
    pairs = 0
    for row in conn.execute(stmt):
        pairs += 1
        primary, shadow = versions[row.model_id], versions[c if row.model_id == b else b]
        if row.started_at is not None and row.finished_at is not None:
            primary.latencies.append(
                (as_utc(row.finished_at) - as_utc(row.started_at)).total_seconds())
        shadow.latencies.append(float(row.seconds))
        ok = row.status == JobStatus.SUCCEEDED.value and row.result is not None
        primary.answered += ok
        primary.failures += row.status == JobStatus.FAILED.value
        shadow.answered += row.s_error is None
        shadow.failures += row.s_error is not None
        if not ok or row.s_error is not None or row.s_result is None:
            continue
        mine, theirs = _predictions(row.result), _predictions(row.s_result)
        tally.add(*((mine, theirs) if row.model_id == b else (theirs, mine)))
    pairs += _chunks(conn, b, c, tally, versions, limit)
    return _report(baseline, candidate, tally, versions, pairs, limit)


def _chunks(conn: Connection, b: int, c: int, tally: _Tally, versions: dict[int, _Version],
            limit: int) -> int:
    """Bulk jobs' chunks both versions answered, newest first, one chunk in memory at a time;
    a job counts once, whatever its chunks. Returns the chunks read."""
    stmt = (select(jobs.c.id, jobs.c.model_id, job_chunks.c.result,
                   shadow_chunk_results.c.result.label("s_result"),
                   shadow_chunk_results.c.error.label("s_error"), shadow_chunk_results.c.seconds)
            .join(job_chunks, and_(job_chunks.c.job_id == shadow_chunk_results.c.job_id,
                                   job_chunks.c.seq == shadow_chunk_results.c.seq))
            .join(jobs, jobs.c.id == shadow_chunk_results.c.job_id)
            .where(or_(and_(jobs.c.model_id == b, shadow_chunk_results.c.model_id == c),
                       and_(jobs.c.model_id == c, shadow_chunk_results.c.model_id == b)),
                   job_chunks.c.result.is_not(None))
            .order_by(shadow_chunk_results.c.created_at.desc()).limit(limit)
            .execution_options(yield_per=20))
    seen: set[str] = set()
    read = 0
    for row in conn.execute(stmt):
        read += 1
        shadow = versions[c if row.model_id == b else b]
        shadow.latencies.append(float(row.seconds))
        shadow.answered += row.s_error is None
        shadow.failures += row.s_error is not None
        if row.s_error is not None or row.s_result is None:
            continue
        mine = _chunk_predictions(row.result)
        theirs = _chunk_predictions(row.s_result)
        tally.add(*((mine, theirs) if row.model_id == b else (theirs, mine)),
                  job=row.id not in seen)
        seen.add(row.id)
    return read


def _chunk_predictions(data: bytes) -> list[Any]:
    found = payloads.as_lists(payloads.decode_result(data))
    return list(found.get("predictions", []))


def _report(baseline: ModelInfo, candidate: ModelInfo, tally: _Tally,
            versions: dict[int, _Version], pairs: int, limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": baseline.name, "baseline": baseline.version, "candidate": candidate.version,
        "kind": baseline.kind, "jobs": tally.jobs, "rows": tally.rows,
        "agreement": tally.equal / tally.rows if tally.rows else None,
        "pairs": pairs, "limit": limit,
        "versions": {baseline.version: versions[baseline.id].public(),
                     candidate.version: versions[candidate.id].public()}}
    if tally.kind == "classifier":
        out["confusion"] = {b: dict(c) for b, c in tally.confusion.items()}
    else:
        out["mean_abs_diff"] = tally.abs_sum / tally.rows if tally.rows else None
        out["max_abs_diff"] = tally.abs_max if tally.rows else None
    return out


def _predictions(text: str) -> list[Any]:
    return list(json.loads(text).get("predictions", []))


def _percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest rank, in milliseconds (None: no samples)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1] * 1000, 3)
