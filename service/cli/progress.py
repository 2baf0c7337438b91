"""How far an upload or a job is, on stderr, for `predq submit` and `predq status --wait`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

Clock = Callable[[], float]


class Progress:
    """`label: done of total unit (percent), rate unit/s` on stderr. On a terminal one line
    redrawn in place at most every `redraw` seconds (an upload reads its file in many small
    blocks); elsewhere (a log, CI) a plain line every `every` seconds. Every line ends with
    a last one at the end. The rate is over what this display saw happen: from its first
    reading, never from zero (a job already half done when watched is not infinitely fast),
    and only once a second has passed."""

    def __init__(self, label: str, unit: str, scale: float = 1.0, every: float = 5.0,
                 redraw: float = 0.2, clock: Clock = time.monotonic,
                 tty: bool | None = None) -> None:
        self.label, self.unit, self.scale, self.every = label, unit, scale, every
        self.redraw, self.clock = redraw, clock
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.shown_at: float | None = None
        self.first: tuple[float, int] | None = None  # (when, done) of the first reading
        self.last: tuple[int, int] | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.last is not None:
            self._show(*self.last, final=True)

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.first is None:
            self.first = (now, done)
        self.last = (done, total)
        pause = self.redraw if self.tty else self.every
        if self.shown_at is None or now - self.shown_at >= pause:
            self.shown_at = now
            self._show(done, total)

    def line(self, done: int, total: int, final: bool = False) -> str:
        fmt = ",.0f" if self.scale == 1 else ",.1f"
        text = (f"{self.label}: {done / self.scale:{fmt}} of {total / self.scale:{fmt}} "
                f"{self.unit} ({100 * done / max(total, 1):.0f}%)")
        assert self.first is not None
        since, done_then = self.first
        elapsed = self.clock() - since
        if elapsed >= 1.0 or (final and elapsed > 0 and done > done_then):
            text += f", {(done - done_then) / self.scale / elapsed:{fmt}} {self.unit}/s"
        return text

    def _show(self, done: int, total: int, final: bool = False) -> None:
        line = self.line(done, total, final)
        if self.tty:
            click.echo("\r" + line.ljust(79), nl=final, err=True)
        else:
            click.echo(line, err=True)
