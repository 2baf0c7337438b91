"""WSGI entry point for gunicorn: `gunicorn service.api.wsgi:app`."""

from service.api import create_app
from service.core.settings import Settings
from service.ops import logs

_settings = Settings.from_env()
logs.configure(_settings.log_level, _settings.log_format)
app = create_app(_settings)
