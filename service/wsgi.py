"""WSGI entry point for gunicorn: `gunicorn service.wsgi:app`."""

from service import logs
from service.api import create_app
from service.config import Settings

_settings = Settings.from_env()
logs.configure(_settings.log_level, _settings.log_format)
app = create_app(_settings)
