"""predq workers: Celery tasks that run jobs through models in micro-batches."""
