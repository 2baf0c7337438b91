"""Hand-written Flask + Celery + PostgreSQL service used as the honest comparison."""
