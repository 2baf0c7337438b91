"""`celery -A workers.main worker`: the configured app with every task registered.

This module is the worker process's entry point: it sets up logging at once, so that even what
Celery says before its own logging starts (the superuser warning, say) is in predq's format.
"""

from __future__ import annotations

from service.core.settings import Settings
from service.ops import logs
from workers.app import make_celery
from workers.tasks import register

settings = Settings.from_env()
logs.configure(settings.log_level, settings.log_format)
app = make_celery(settings)
register(app)
