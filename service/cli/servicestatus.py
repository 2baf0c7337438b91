"""`predq status` without a job id: the service's status, as an operator first asks for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def show_service(client: Any, call: Callable[[Callable[[], Any]], Any]) -> None:
    """Print the URL, whether it is ready (and which store is not), the workers and the
    queues. The workers need a key; without one the rest is still shown."""
    from service.client import ApiError

    ready = call(client.ready)
    click.echo(f"predq at {client.url}: {ready['status']}")
    for check, state in sorted(ready.get("checks", {}).items()):
        click.echo(f"  {check}: {state}")
    try:
        listed = client.workers()["workers"]
    except ApiError as exc:
        click.echo(f"  workers: {ready.get('workers', '?')} predicting (listing them: {exc})")
        listed = None
    if listed is not None:
        _workers(listed)
    queues = ready.get("queues", {})
    if queues:
        click.echo(f"  {'queue':<20} {'depth':>7} {'oldest':>9} {'drain/s':>8}")
        for name, q in queues.items():
            oldest = "-" if q["oldest_age_seconds"] is None else f"{q['oldest_age_seconds']:.1f}s"
            click.echo(f"  {name:<20} {q['depth']:>7,} {oldest:>9} {q['drain_per_second']:>8}")


def _workers(listed: list[dict[str, Any]]) -> None:
    live = [w for w in listed if not w["stale"]]
    predicting = sum(1 for w in live if w["role"] in ("predict", "chunks"))
    click.echo(f"  workers: {predicting} predicting, {len(live) - predicting} other "
               f"(webhooks, maintenance), {len(listed) - len(live)} stale")
    for w in listed:
        busy = sum(1 for p in w["processes"] if p["busy"])
        pool = sum(1 for p in w["processes"] if p["role"] == "pool")
        state = "stale" if w["stale"] else f"{busy} of {pool} busy"
        click.echo(f"    {w['name']:<28} {w['role']:<9} {state:<12} "
                   f"{w['jobs_per_second']} jobs/s, {w['rows_per_second']} rows/s")
