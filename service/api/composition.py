"""The API process's composition root: every object the views use, built once per app from
the settings (no connection opens until first use, so gunicorn may fork after)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy import Engine

from service.api.lookups import KeyLookup
from service.core.broker import celery_publisher, make_producer
from service.core.messaging import Publisher
from service.core.settings import Settings
from service.jobs.admission import QueueGauge
from service.jobs.aftercommit import job_ends
from service.jobs.committer import GroupCommitter
from service.jobs.ending import JobEnds
from service.jobs.submit import Submitter, make_submitter
from service.jobs.wakeups import ResultWaiter
from service.models.lookup import ModelLookup
from service.store.db import make_engine, reader
from service.store.redisclient import redis_client
from service.tenants.limits import Limits, Quotas, TenantLimits
from service.webhooks.endpoints import Sealer
from service.webhooks.safety import AllowList


@dataclass
class Services:
    """What the views need, built once per app from the settings."""

    settings: Settings
    engine: Engine
    reads: Engine  # the same pool in autocommit, for single-statement reads
    submitter: Submitter  # the one way jobs come in
    models: ModelLookup
    keys: KeyLookup
    redis: redis.Redis
    gauge: QueueGauge  # queue depths, for 429s and health
    waiter: ResultWaiter  # wake-ups for synchronous predict
    sealer: Sealer  # webhook signing secrets at rest
    webhook_allow: AllowList  # non-public webhook targets the operator allows
    publish: Publisher  # ids to a queue; fails fast when Redis is down
    ends: JobEnds  # where a job ends (a cancel), and what follows the commit
    quotas: Quotas  # requests and rows per tenant, shared through Redis


def compose(settings: Settings) -> Services:
    """Build the API's services from the settings."""
    _warm_columnar()
    engine = make_engine(settings.database_url, **settings.pool_options())
    # Publishing fails fast when Redis is down: the rows are committed, the reconciler re-sends.
    publish = celery_publisher(make_producer(settings))
    client = redis_client(settings.redis_url)
    ends = job_ends(engine, client, publish, settings.webhook_max_inline_bytes,
                    min_slots=settings.bulk_window)
    committer = GroupCommitter(ends, publish, settings.submit_group_max, settings.submit_linger)
    reads = reader(engine)
    default_limits = Limits(settings.rate_limit_rps, settings.rate_limit_rows_per_minute)
    quotas = Quotas(settings.redis_url, TenantLimits(reads, default_limits))
    models = ModelLookup(reads)
    submitter = make_submitter(settings, engine, client, publish, committer, quotas, models,
                               ends)
    return Services(
        settings, engine, reads, submitter, models,
        KeyLookup(reads, client, settings.key_epoch_check_interval), client, submitter.gauge,
        ResultWaiter(settings.redis_url), Sealer(settings.secret_key),
        AllowList.parse(settings.webhook_allow_hosts), publish, ends, quotas)


def _warm_columnar() -> None:
    """Load pyarrow, and the pandas it loads on its first conversion of values (pandas is
    installed for typed models), now rather than in the middle of the process's first upload:
    that request is no slower than the next, and its memory is its own (~45 MB of libraries
    otherwise counted against a request)."""
    import numpy as np
    import pyarrow as pa

    pa.array(np.zeros(1)).to_numpy()
