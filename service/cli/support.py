"""What the `predq` subcommands share: durations, turning errors into messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from service.core.errors import PredqError


def run(fn: Callable[[], Any]) -> Any:
    """Call fn; a PredqError becomes a one-line message and exit status 1."""
    try:
        return fn()
    except PredqError as exc:
        raise click.ClickException(exc.message) from exc


def duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r}: e.g. 90d, 12h, 30m or seconds") from None
    if value <= 0:
        raise click.BadParameter("must be positive")
    return value

