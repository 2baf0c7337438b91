"""`predq submit`, `status`, `result`, `cancel`: the command line client of the HTTP API."""

from __future__ import annotations

import sys
import time

import click


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
    with Progress("upload", "MB", scale=1e6) as shown:
        job_id = _call(lambda: client.submit(model, path=path, version=version,
                                             priority=priority, idempotency_key=idempotency_key,
                                             progress=shown))
    click.echo(job_id)
    if not wait:
        return
    job = _watch(client, job_id)
    click.echo(f"{job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
               err=True)
    if job["status"] != "succeeded":
        sys.exit(1)
    if output:
        click.echo(f"result: {_call(lambda: client.result(job_id, output))}", err=True)


@click.command()
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="wait until it is final, showing its progress")
@_url
@_key
def status(job_id: str, wait: bool, url: str | None, key: str | None) -> None:
    """Print the job as JSON."""
    import json

    client = _client(url, key)
    job = _watch(client, job_id) if wait else _call(lambda: client.status(job_id))
    click.echo(json.dumps(job, indent=2))


@click.command()
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="write here, in the format its suffix names (default: JSON to stdout)")
@_url
@_key
def result(job_id: str, output: str | None, url: str | None, key: str | None) -> None:
    """Fetch a succeeded job's result."""
    import json

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


class Progress:
    """How far an upload or a job is, on stderr: done of total, percent and rate. On a
    terminal one line redrawn in place; elsewhere (a log, CI) a plain line every few seconds
    and one at the end."""

    def __init__(self, label: str, unit: str, scale: float = 1.0, every: float = 5.0) -> None:
        self.label, self.unit, self.scale, self.every = label, unit, scale, every
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.shown_at = 0.0
        self.last: tuple[int, int] | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.last is not None:
            self._show(*self.last, final=True)

    def __call__(self, done: int, total: int) -> None:
        self.last = (done, total)
        now = time.monotonic()
        if self.tty or now - self.shown_at >= self.every:
            self.shown_at = now
            self._show(done, total)

    def _show(self, done: int, total: int, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        fmt = ",.0f" if self.scale == 1 else ",.1f"
        line = (f"{self.label}: {done / self.scale:{fmt}} of {total / self.scale:{fmt}} "
                f"{self.unit} ({100 * done / max(total, 1):.0f}%), "
                f"{done / self.scale / elapsed:{fmt}} {self.unit}/s")
        if self.tty:
            click.echo("\r" + line.ljust(79), nl=final, err=True)
        else:
            click.echo(line, err=True)


def _watch(client, job_id: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    with Progress("rows", "rows") as shown:
        return _call(lambda: client.wait(job_id, progress=shown))  # type: ignore[no-any-return]


def _call(fn):  # type: ignore[no-untyped-def]
    from service.client import ApiError

    try:
        return fn()
    except ApiError as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

