"""The Celery worker processes: thin tasks over tripmail's domain functions."""
