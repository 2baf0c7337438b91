"""Group commit: the jobs of concurrent submissions share one transaction and one message.

A request thread hands its validated job to the process's committer thread and waits. The
committer takes everything that arrived, INSERTs it in one transaction, commits, wakes the
waiters (a 202 still means the row is committed), then publishes one message per queue with the
group's ids. A lone request waits for one commit only: nothing waits on a timer. If the
broker is down the job is still accepted: its row is committed, and the reconciler sends it
once the broker is back.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError, OperationalError

from service.core.errors import TransientError
from service.core.messaging import PREDICT_TASK, Publisher, publish_or_defer
from service.core.states import JobStatus
from service.jobs.ending import End, JobEnds
from service.jobs.lifecycle import KeyTaken, NewJob, insert_jobs
from service.ops import metrics

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    job: NewJob
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommitter:
    """Commits jobs in groups and publishes each group after its commit."""

    def __init__(self, ends: JobEnds, publish: Publisher, max_group: int = 256,
                 linger: float = 0.0, broker_retry_after: float = 5.0) -> None:
        self._ends = ends
        self._publish = publish
        self._max_group = max_group
        self._linger = linger
        self._broker_retry_after = broker_retry_after
        self._broker_down_until = 0.0
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid = 0

    def submit(self, job: NewJob, timeout: float = 60.0) -> NewJob:
        """Return once the job row is committed; raise TransientError if it could not be."""
        self._ensure_thread()
        item = _Pending(job.with_id() if not job.id else job)
        self._queue.put(item)
        if not item.done.wait(timeout):
            raise TransientError("the result store did not commit the job in time")
        if item.error is not None:
            raise item.error
        return item.job

    def _ensure_thread(self) -> None:
        # A thread does not survive fork (gunicorn forks workers), so start one per process.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._run, name="predq-committer", daemon=True).start()
                self._pid = os.getpid()

    def _run(self) -> None:
        busy = False
        while True:
            group = [self._queue.get()]
            # Under load (the last group had company) wait up to `linger` for more jobs: larger
            # groups cost less per job. A lone request never waits.
            deadline = time.monotonic() + (self._linger if busy else 0.0)
            while len(group) < self._max_group:
                try:
                    timeout = deadline - time.monotonic()
                    group.append(self._queue.get(timeout=timeout) if timeout > 0
                                 else self._queue.get_nowait())
                except queue.Empty:
                    break
            busy = len(group) > 1
            self._commit(group)
            self._publish_group(group)

    def _commit(self, group: Sequence[_Pending]) -> None:
        error: BaseException | None = None
        inserted: set[str] = set()
        try:
            with self._ends.begin() as ending:
                inserted = set(insert_jobs(ending.conn, [item.job for item in group]))
                ending.ended(_from_cache(item.job) for item in group
                             if item.job.id in inserted and not item.job.needs_worker)
        except (OperationalError, DBAPIError) as exc:
            log.error("job insert failed for %d jobs: %s", len(group), exc)
            error = TransientError("the result store is unavailable; the job was not accepted")
        except Exception as exc:  # noqa: BLE001 - the waiters must always be woken
            log.exception("job insert failed")
            error = exc
        if error is None:  # counted before the 202s go out
            metrics.jobs_committed(item.job for item in group if item.job.id in inserted)
        for item in group:
            item.error = error
            if error is None and item.job.id not in inserted:
                item.error = KeyTaken(item.job.id)  # its key's first job answers instead
            item.done.set()

    def _publish_group(self, group: Sequence[_Pending]) -> None:
        if any(item.error is not None and not isinstance(item.error, KeyTaken)
               for item in group):
            return
        if time.monotonic() < self._broker_down_until:
            return  # the broker just failed: don't stall every submit; the reconciler re-sends
        by_queue: dict[str, list[str]] = defaultdict(list)
        for item in group:
            if item.error is not None:
                continue  # not inserted: another job holds its Idempotency-Key
            if item.job.needs_worker:  # a result served from cache is already final
                by_queue[item.job.queue].append(item.job.id)
        for queue_name, ids in by_queue.items():
            if not publish_or_defer(self._publish, PREDICT_TASK, queue_name, ids):
                # Don't stall every submit on a dead broker: pause publishing for a while.
                self._broker_down_until = time.monotonic() + self._broker_retry_after
                log.error("not publishing for %.0f s: the broker failed",
                          self._broker_retry_after)
                return


def _from_cache(job: NewJob) -> End:
    """A job answered from the prediction cache ends as it is inserted."""
    return End(job.id, job.tenant, job.model_id, JobStatus.SUCCEEDED, job.n_rows, job.queue,
               request_id=job.request_id)
