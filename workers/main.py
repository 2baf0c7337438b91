"""`celery -A workers.main worker`: the configured app with every task registered."""

from __future__ import annotations

from workers.app import make_celery
from workers.tasks import register

app = make_celery()
register(app)
