"""`predq submit`, `status`, `jobs`, `result`, `cancel`: the command line client of the HTTP
API."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from service.cli.progress import Progress
from service.cli.servicestatus import show_service


def _client(url: str | None, key: str | None):  # type: ignore[no-untyped-def]
    from service.client import Client

    return Client(url, key)


_url = click.option("--url", envvar="PREDQ_URL", help="the API [PREDQ_URL; default: where "
                    "`predq up` listens, http://PREDQ_HOST:PREDQ_PORT]")
_key = click.option("--key", envvar="PREDQ_API_KEY",
                    help="API key [PREDQ_API_KEY; default: var/dev-api-key of `predq up`]")


@click.command()
@click.option("--model", required=True)
@click.option("--input", "path", required=True, type=click.Path(exists=True, dir_okay=False),
              help=".csv (header: feature names), .ndjson, .npy, .parquet or .arrow")
@click.option("--version", "version", help="default: the latest")
@click.option("--priority", help="interactive, normal, bulk (default for files) or 0-9")
@click.option("--idempotency-key", help="retrying with the same key never makes a second job")
@click.option("--wait", is_flag=True, help="wait for the job, showing its progress")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="with --wait: write the result here "
                   "(.csv, .ndjson, .json, .npy, .parquet, .arrow)")
@_url
@_key
def submit(model: str, path: str, version: str | None, priority: str | None,
           idempotency_key: str | None, wait: bool, output: str | None, url: str | None,
           key: str | None) -> None:
    """Upload FILE as a bulk job and print its id (with --wait: its final status too)."""
    client = _client(url, key)
    try:
        with Progress("upload", "MB", scale=1e6) as shown:
            job_id = _call(lambda: client.submit(
                model, path=path, version=version, priority=priority,
                idempotency_key=idempotency_key, progress=shown))
    except KeyboardInterrupt:
        _stop("\nupload interrupted: predq discards an upload that does not arrive whole, so "
              "no job runs" + (" (the same --idempotency-key may be sent again)"
                               if idempotency_key else ""))
    if not wait:
        click.echo(job_id)
        return
    try:
        click.echo(job_id)
        job = _watch(client, job_id)
    except KeyboardInterrupt:  # between the id and the watch
        _stop(_goes_on(job_id))
    click.echo(f"{job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
               err=True)
    if job["status"] != "succeeded":
        sys.exit(1)
    if output:
        click.echo(f"result: {_call(lambda: client.result(job_id, output))}", err=True)


@click.command()
@click.argument("job_id", required=False)
@click.option("--wait", is_flag=True, help="wait until it is final, showing its progress")
@_url
@_key
def status(job_id: str | None, wait: bool, url: str | None, key: str | None) -> None:
    """Print the job JOB_ID as JSON; without JOB_ID, the service's status: its URL, whether
    it is ready, its workers and its queues."""
    client = _client(url, key)
    if job_id is None:
        show_service(client, _call)
        return
    job = _watch(client, job_id) if wait else _call(lambda: client.status(job_id))
    click.echo(json.dumps(job, indent=2))


@click.command("jobs")
@click.option("--status", help="queued, running, succeeded, failed, cancelled or expired")
@click.option("--model", help="a model's name")
@click.option("--priority", help="interactive, normal or bulk")
@click.option("--id", help="the start of a job id")
@click.option("--since", help="created at or after (ISO 8601 with a timezone)")
@click.option("--until", help="created before (ISO 8601 with a timezone)")
@click.option("--oldest", is_flag=True, help="oldest first (default: newest first)")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--cursor", help="the page after the one that printed this cursor")
@click.option("--json", "as_json", is_flag=True, help="the API's answer, as JSON")
@_url
@_key
def jobs_list(oldest: bool, as_json: bool, url: str | None, key: str | None,
              **filters: Any) -> None:
    """List your jobs, newest first, with the API's filters; a page at a time."""
    client = _client(url, key)
    page = _call(lambda: client.jobs(**filters, sort="oldest" if oldest else None))
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    rows = [("id", "status", "model", "priority", "rows", "done", "created")]
    rows += [(j["id"], j["status"], f"{j['model']} {j['version']}", j["priority"],
              f"{j['rows_total']:,}", f"{j['percent']:.0f}%", j["created_at"])
             for j in page["jobs"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())
    if not page["jobs"]:
        click.echo("no jobs match", err=True)
    if page["next"]:
        click.echo(f"more: add --cursor {page['next']}", err=True)


@click.command()
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="write here, in the format its suffix names (default: JSON to stdout)")
@_url
@_key
def result(job_id: str, output: str | None, url: str | None, key: str | None) -> None:
    """Fetch a succeeded job's result."""
    client = _client(url, key)
    got = _call(lambda: client.result(job_id, output))
    click.echo(got if output else json.dumps(got))


@click.command()
@click.argument("job_id")
@_url
@_key
def cancel(job_id: str, url: str | None, key: str | None) -> None:
    """Cancel a queued or running job."""
    client = _client(url, key)
    click.echo(_call(lambda: client.cancel(job_id))["status"])


def _watch(client: Any, job_id: str) -> dict[str, Any]:
    """Wait for the job, showing its progress; Ctrl-C stops watching, not the job."""
    try:
        with Progress("job", "rows") as shown:
            return _call(lambda: client.wait(job_id, progress=shown))  # type: ignore[no-any-return]
    except KeyboardInterrupt:
        _stop(_goes_on(job_id))


def _goes_on(job_id: str) -> str:
    return (f"\nstopped watching; job {job_id} goes on. `predq status {job_id} --wait` "
            f"watches it again, `predq cancel {job_id}` stops it.")


def _stop(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(130)  # what a shell reports for Ctrl-C


def _call(fn):  # type: ignore[no-untyped-def]
    from service.client import ApiError

    try:
        return fn()
    except ApiError as exc:
        raise click.ClickException(str(exc) + _hint(exc)) from exc
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _hint(exc: Any) -> str:
    """What to do about a missing or refused key: the CLI reads PREDQ_API_KEY, else the dev
    key `predq up` keeps under var/ of the directory it runs in."""
    if exc.status != 401:
        return ""
    from service.client import dev_key_path

    where = dev_key_path()
    found = (f"{where} holds `predq up`'s dev key, but this API refused it"
             if where.exists() else f"there is no {where} here (the dev key `predq up` "
             "writes, relative to the directory it runs in)")
    return (f"\nset PREDQ_API_KEY (or --key) to a key of this API; {found}; "
            "`predq keys create --tenant NAME` makes one")
