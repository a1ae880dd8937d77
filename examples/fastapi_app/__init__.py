"""FastAPI + SQLAlchemy + pgqueue: jobs enqueued in the request's Session transaction."""
