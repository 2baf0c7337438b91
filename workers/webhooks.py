"""One delivery attempt of one webhook event: claim, sign, POST, record what happened; and the
share of the deliverer's threads each tenant may hold (`webhookgate`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from sqlalchemy import Engine
from standardwebhooks import Webhook

from service.core.errors import PredqError
from service.core.messaging import DELIVER_TASK, WEBHOOK_QUEUE, Publisher, publish_or_defer
from service.core.settings import Settings
from service.core.times import utcnow
from service.ops import metrics
from service.webhooks import endpoints, events
from service.webhooks.safety import AllowList
from service.webhooks.sender import SafeSender
from workers.webhookgate import TenantGate

log = logging.getLogger(__name__)
USER_AGENT = "predq-webhooks/1"


class Deliverer:
    """Sends webhook events for one worker process, its threads shared fairly by tenants."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.sealer = endpoints.Sealer(settings.secret_key)
        self.sender = SafeSender(AllowList.parse(settings.webhook_allow_hosts))
        self.schedule = settings.retry_schedule()
        self.gate = TenantGate(min(settings.webhook_tenant_concurrency,
                                   settings.webhook_concurrency))

    def deliver_all(self, event_ids: Sequence[str], publish: Publisher) -> None:
        """One attempt for each due event. A message of several events is split into one
        message per event first (one thread would send them one after the other, each behind
        the slow ones of any tenant); an event whose tenant holds all its slots waits behind
        its own, and this thread goes back to the pool."""
        ids = list(dict.fromkeys(event_ids))
        if len(ids) > 1:
            ids = [i for i in ids if not publish_or_defer(publish, DELIVER_TASK, WEBHOOK_QUEUE,
                                                          [i])]  # sent: another thread's
        with self.engine.connect() as conn:
            pending = events.tenants_of(conn, ids) if ids else []
        for event_id, tenant in pending:
            if self.gate.enter(tenant, event_id):
                self._while_holding(tenant, event_id, publish)

    def _while_holding(self, tenant: str, event_id: str, publish: Publisher) -> None:
        """Send `event_id`, then the tenant's waiting events, until none waits: the slot is
        given up only then."""
        next_id: str | None = event_id
        while next_id is not None:
            try:
                self._one(next_id, publish)
            except Exception:  # noqa: BLE001 - the event stays pending in SQL: swept again
                log.exception("webhook %s: attempt not made", next_id,
                              extra={"event_id": next_id, "tenant": tenant})
            next_id = self.gate.next_or_leave(tenant)

    def _one(self, event_id: str, publish: Publisher) -> None:
        """One attempt; a retry due within a minute is sent again as a delayed message
        (stamped sent), a later one is left to the reconciler's sweep."""
        delay = self.deliver(event_id)
        if delay is not None and delay <= 60 and publish_or_defer(
                publish, DELIVER_TASK, WEBHOOK_QUEUE, [event_id], delay):
            with self.engine.begin() as conn:
                events.mark_published(conn, event_id)

    def deliver(self, event_id: str) -> float | None:
        """Make one attempt if the event is due; return the delay before its next attempt, or
        None (delivered, dead, not due, or held by another deliverer)."""
        lease = self.settings.webhook_timeout + 30
        with self.engine.begin() as conn:
            event = events.claim(conn, event_id, lease)
            if event is None:
                return None
            endpoint = endpoints.by_id(conn, event.endpoint_id)
        attempt = self._attempt(event, endpoint)
        with self.engine.begin() as conn:
            delay = events.complete(conn, event, attempt, self.schedule)
        metrics.WEBHOOK_ATTEMPTS.labels("delivered" if attempt.delivered else
                                        "failed" if delay is not None else "dead").inc()
        outcome = ("delivered" if attempt.delivered else
                   f"failed ({attempt.error or attempt.status_code}), "
                   + (f"next attempt in {delay:.1f} s" if delay is not None else "dead-lettered"))
        log.info("webhook %s %s for job %s, attempt %d: %s", event.id, event.type,
                 event.job_id, event.attempts, outcome,
                 extra={"event_id": event.id, "job_id": event.job_id, "tenant": event.tenant})
        return delay

    def _attempt(self, event: events.Event, endpoint: endpoints.Endpoint | None,
                 ) -> events.Attempt:
        if endpoint is None or (endpoint.url is not None and endpoint.disabled_at is not None):
            # Not retried: no later attempt could reach it.
            return events.Attempt(None, None, "the endpoint was deleted or disabled",
                                  final=True)
        now = utcnow()
        try:
            signatures = " ".join(Webhook(secret).sign(event.id, now, event.payload)
                                  for secret in endpoint.signing_secrets(self.sealer, now))
        except PredqError as exc:
            return events.Attempt(None, None, exc.message)
        headers = {
            "content-type": "application/json", "user-agent": USER_AGENT,
            "webhook-id": event.id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures,
        }
        try:
            answer = self.sender.post(event.url, event.payload.encode(), headers,
                                      self.settings.webhook_timeout)
        except PredqError as exc:  # unsafe address, timeout, connection refused
            return events.Attempt(None, None, exc.message)
        error = None
        if not 200 <= answer.status < 300:
            error = f"answered {answer.status}"
            if 300 <= answer.status < 400:
                error += " (redirects are not followed)"
        return events.Attempt(answer.status, round(answer.elapsed * 1000, 1), error,
                              _retry_after(answer.headers.get("retry-after")))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
