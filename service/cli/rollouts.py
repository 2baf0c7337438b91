"""`predq models rollout` and `predq models compare`: the operator's rollout of a model's new
version from the command line, the same calls as the API's operator routes."""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

import click

from service.cli import composition
from service.cli.support import run as _run
from service.core.errors import InvalidInput


@click.command("rollout")
@click.argument("name")
@click.argument("action", required=False, default="show",
                type=click.Choice(["show", "history"]))
@click.option("--weights", help="version=weight pairs, e.g. 1=95,2=5 (shares are weight/sum)")
@click.option("--shadow", help="VERSION:PERCENT, e.g. 2:100: that share of the jobs also runs "
                               "on VERSION, compared, never delivered")
@click.option("--clear", is_flag=True, help="back to the latest registered version")
def rollout(name: str, action: str, weights: str | None, shadow: str | None,
            clear: bool) -> None:
    """Show, set (--weights, --shadow) or --clear the rollout of model NAME; `history` lists
    its changes. API processes read a change within 2 seconds."""
    from service.models import registry, rollouts

    if clear and (weights or shadow):
        raise click.UsageError("--clear takes no --weights or --shadow")
    if shadow and not weights:
        raise click.UsageError("--shadow needs --weights (the versions the jobs get)")
    by = f"command line: {getpass.getuser()}@{socket.gethostname()}"
    with composition.engine().begin() as conn:
        _run(lambda: registry.resolve(conn, name))
        if action == "history":
            click.echo(json.dumps(rollouts.history(conn, name), indent=2))
            return
        if clear:
            rollouts.clear(conn, name, by)
        elif weights:
            body = {"weights": _run(lambda: _pairs(weights)),
                    "shadow": None if shadow is None else _run(lambda: _shadow(shadow))}
            _run(lambda: rollouts.put(conn, rollouts.parse(conn, name, body), by))
        click.echo(json.dumps(rollouts.describe(conn, name), indent=2))


@click.command("compare")
@click.argument("name")
@click.option("--baseline", required=True, help="the version compared against")
@click.option("--candidate", required=True, help="the version compared")
@click.option("--limit", default=10_000, show_default=True, help="newest shadowed jobs read")
def compare(name: str, baseline: str, candidate: str, limit: int) -> None:
    """How version CANDIDATE of NAME differs from BASELINE on the jobs shadowed so far."""
    from service.jobs.compare import compare as report
    from service.models import registry

    with composition.engine().connect() as conn:
        base = _run(lambda: registry.resolve(conn, name, baseline))
        cand = _run(lambda: registry.resolve(conn, name, candidate))
        click.echo(json.dumps(_run(lambda: report(conn, base, cand, limit)), indent=2))


def _pairs(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        version, sep, weight = part.partition("=")
        try:
            out[version.strip()] = float(weight)
        except ValueError:
            raise InvalidInput("weights", f"VERSION=WEIGHT, not {part[:40]!r}") from None
        if not sep:
            raise InvalidInput("weights", f"VERSION=WEIGHT, not {part[:40]!r}")
    return out


def _shadow(text: str) -> dict[str, Any]:
    version, _, percent = text.partition(":")
    try:
        return {"version": version.strip(), "percent": float(percent or 100)}
    except ValueError:
        raise InvalidInput("shadow", f"VERSION:PERCENT, not {text[:40]!r}") from None
