"""`GET /metrics` in the Prometheus text format, and the HTTP request metrics.

In multiprocess mode a scrape adds up the files every predq process wrote (API, workers,
deliverer); otherwise it reads this process's default registry. Either way the queue gauges
are read at scrape time, from SQL, by the API's QueueGauge.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from service.core.errors import Unauthorized
from service.jobs.admission import QueueGauge
from service.ops import metrics

log = logging.getLogger(__name__)
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
TOP_TENANTS = 10


class QueueCollector:
    """Depth and oldest queued job's age of every predict queue, computed when scraped."""

    def __init__(self, gauge: QueueGauge) -> None:
        self._gauge = gauge

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._gauge.stats()
        except Exception as exc:  # noqa: BLE001 - the rest of the scrape is still worth having
            log.warning("queue metrics unavailable: %s", str(exc).splitlines()[0])
            return
        depth = GaugeMetricFamily(
            "predq_queue_depth_jobs", "Jobs waiting per queue: queued single jobs, and bulk jobs "
            "with chunks not yet predicted.", labels=["queue"])
        chunks = GaugeMetricFamily("predq_queue_depth_chunks",
                                   "Bulk chunks waiting (not yet claimed) per queue.",
                                   labels=["queue"])
        rows = GaugeMetricFamily("predq_queue_depth_rows",
                                 "Rows waiting per queue: of queued jobs and of waiting chunks.",
                                 labels=["queue"])
        age = GaugeMetricFamily(
            "predq_queue_oldest_job_age_seconds",
            "Age of the oldest waiting job or chunk per queue (0: nothing waits).",
            labels=["queue"])
        for queue, stat in stats.items():
            depth.add_metric([queue], stat.depth)
            chunks.add_metric([queue], stat.chunks)
            rows.add_metric([queue], stat.rows)
            age.add_metric([queue], stat.oldest_age_seconds or 0.0)
        yield from (depth, chunks, rows, age)
        yield self._tenant_rows()

    def _tenant_rows(self) -> Metric:
        """Rows waiting per queue and tenant: the TOP_TENANTS with most, the rest summed as
        `other` (a label per tenant would grow without bound)."""
        family = GaugeMetricFamily("predq_queue_depth_rows_by_tenant",
                                   f"Rows waiting per queue and tenant (the {TOP_TENANTS} "
                                   "tenants with most; the others as 'other').",
                                   labels=["queue", "tenant"])
        waiting = sorted(self._gauge.tenant_rows().items(), key=lambda kv: -kv[1])
        other: dict[str, int] = {}
        for i, ((queue, tenant), n) in enumerate(waiting):
            if i < TOP_TENANTS:
                family.add_metric([queue, tenant], n)
            else:
                other[queue] = other.get(queue, 0) + n
        for queue, n in other.items():
            family.add_metric([queue, "other"], n)
        return family


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def register(app: Flask) -> None:
    """Add `GET /metrics` and time every request. With `metrics_token` set, a scrape must send
    `Authorization: Bearer TOKEN` (the metrics name every tenant); without it, it is open."""
    token = app.extensions["predq"].settings.metrics_token
    registry = CollectorRegistry()
    if metrics.MULTIPROC_DIR is not None:
        MultiProcessCollector(registry, metrics.MULTIPROC_DIR)
    registry.register(QueueCollector(app.extensions["predq"].gauge))
    sources = [registry] if metrics.MULTIPROC_DIR is not None else [REGISTRY, registry]

    def scrape() -> Response:
        if token:
            scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(),
                                                                     token.encode()):
                raise Unauthorized("send the metrics token as 'Authorization: Bearer TOKEN' "
                                   "(PREDQ_METRICS_TOKEN)")
        body = b"".join(generate_latest(source) for source in sources)
        return Response(body, content_type=TEXT_FORMAT)

    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])
    # First, so the time includes every other before_request hook.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_observe)


def _start() -> None:
    g.predq_started = time.perf_counter()


def _observe(response: Response) -> Response:
    rule = request.url_rule
    method = request.method if request.method in METHODS else "other"  # bounded label values
    labels = (method, rule.rule if rule is not None else "unmatched", str(response.status_code))
    metrics.HTTP_REQUESTS.labels(*labels).inc()
    started = g.pop("predq_started", None)
    if started is not None:
        metrics.HTTP_DURATION.labels(*labels).observe(time.perf_counter() - started)
    return response
