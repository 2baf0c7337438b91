"""`predq keys`, `predq limits`, `predq schedules`: what an operator manages per tenant."""

from __future__ import annotations

import sys

import click

from service.cli import composition
from service.cli.composition import settings as _settings
from service.cli.support import duration as _duration
from service.cli.support import run as _run
from service.core import times


@click.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", required=True)
@click.option("--scopes", default="submit,read", show_default=True,
              help="comma-separated: submit, read, admin, operator (model rollouts; only here)")
@click.option("--expires-in", help="lifetime, e.g. 90d, 12h, 30m or seconds")
@click.option("--name", help="what the key is for (shown by `keys list`)")
def keys_create(tenant: str, scopes: str, expires_in: str | None, name: str | None) -> None:
    """Create a key for TENANT and print it once (only its hash is stored)."""
    from datetime import timedelta

    from service.core.times import utcnow
    from service.tenants.keys import create_key, parse_scopes

    expires_at = utcnow() + timedelta(seconds=_duration(expires_in)) if expires_in else None
    with composition.engine().begin() as conn:
        click.echo(_run(lambda: create_key(conn, tenant, parse_scopes(scopes), expires_at,
                                           name)))


@keys.command("list")
@click.option("--tenant", help="only this tenant's keys")
@click.option("--all", "show_all", is_flag=True, help="also revoked and expired keys")
def keys_list(tenant: str | None, show_all: bool) -> None:
    """List keys (prefix, tenant, scopes, status, expiry, name); never the keys themselves."""
    from service.tenants.keys import list_keys

    with composition.engine().connect() as conn:
        rows = list_keys(conn, tenant)
    click.echo("prefix\ttenant\tscopes\tstatus\tcreated\texpires\tname")
    for k in rows:
        if show_all or k["status"] == "active":
            click.echo("\t".join([k["prefix"], k["tenant"], ",".join(k["scopes"]), k["status"],
                                  k["created_at"][:19], (k["expires_at"] or "-")[:19],
                                  k["name"] or "-"]))




@keys.command("revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    """Revoke the key that starts with PREFIX (its first 10 characters)."""
    import redis

    from service.tenants.keys import announce_revocation, revoke_key

    settings = _settings()
    with composition.engine(settings).begin() as conn:
        count = revoke_key(conn, prefix[:10])
    try:
        announce_revocation(composition.redis(settings), settings.key_epoch_check_interval)
    except redis.RedisError as exc:
        click.echo(f"warning: Redis unreachable ({exc}); API processes may accept the key "
                   "for up to 60 s more", err=True)
    click.echo(f"revoked {count} key(s)")
    if not count:
        sys.exit(1)



@click.group()
def limits() -> None:
    """Per-tenant rate limits (requests per second, rows per minute)."""


@limits.command("set")
@click.argument("tenant")
@click.option("--rps", type=float, help="requests per second (0: unlimited)")
@click.option("--rows-per-minute", type=int, help="rows of accepted jobs per minute (0: unlimited)")
@click.option("--retention", help="how long finished jobs are kept, e.g. 7d, 12h")
@click.option("--weight", type=float,
              help="its share of the bulk processes beside other tenants' bulk jobs (1: equal)")
def limits_set(tenant: str, rps: float | None, rows_per_minute: int | None,
               retention: str | None, weight: float | None) -> None:
    """Give TENANT its own limits (the ones named; the others stay); every API process applies
    them within 2 seconds, the bulk dispatch at its next chunk."""
    from service.tenants.limits import all_limits, set_limits

    seconds = _duration(retention) if retention else None
    with composition.engine().begin() as conn:
        _run(lambda: set_limits(conn, tenant, rps, rows_per_minute, seconds, weight))
        click.echo(f"{tenant}: {_describe(*all_limits(conn)[tenant])}")


@limits.command("clear")
@click.argument("tenant")
def limits_clear(tenant: str) -> None:
    """Put TENANT back on the default limits (PREDQ_RATE_LIMIT_*)."""
    from service.tenants.limits import clear_limits

    with composition.engine().begin() as conn:
        count = clear_limits(conn, tenant)
    click.echo(f"{tenant}: default limits" if count else f"{tenant} had no limits of its own")


@limits.command("show")
def limits_show() -> None:
    """The default limits and every tenant's own."""
    from service.tenants.limits import all_limits

    settings = _settings()
    default = _describe(settings.rate_limit_rps, settings.rate_limit_rows_per_minute,
                        settings.retention_days * 86400)
    click.echo(f"default: {default}")
    with composition.engine(settings).connect() as conn:
        for tenant, values in all_limits(conn).items():
            click.echo(f"{tenant}: {_describe(*values)}")


def _describe(rps: float | None, rows: int | None, retention: float | None = None,
              weight: float | None = None) -> str:
    def one(value: float | None, unit: str) -> str:
        if value is None:
            return f"default {unit}"
        return f"unlimited {unit}" if value == 0 else f"{value:g} {unit}"

    kept = "default retention" if retention is None else f"jobs kept {retention / 86400:g} days"
    share = f", bulk weight {weight:g}" if weight is not None else ""
    return f"{one(rps, 'requests/s')}, {one(rows, 'rows/minute')}, {kept}{share}"



@click.group()
def schedules() -> None:
    """Periodic bulk forecasts (PREDQ_SCHEDULES, run by `predq beat`)."""


@schedules.command("check")
@click.argument("path", required=False)
def schedules_check(path: str | None) -> None:
    """Check the schedules file (default: PREDQ_SCHEDULES) and show each one's next runs."""
    from datetime import datetime

    from croniter import croniter

    from service.bulk import schedules as sched

    path = path or _settings().schedules
    if not path:
        raise click.ClickException("no schedules file: set PREDQ_SCHEDULES or name one")
    declared = _run(lambda: sched.load(path))
    now = times.utcnow()
    for s in declared:
        upcoming = croniter(s.cron, now).get_next(datetime)
        click.echo(f"{s.name}\t{s.cron}\t{s.tenant}\t{s.model}\t{s.input}\t"
                   f"{s.output or '-'}\tnext {upcoming.isoformat()}")
    click.echo(f"{len(declared)} schedule(s) OK", err=True)

