"""Flask + SQLAlchemy + pgqueue: jobs enqueued in the view's Session transaction."""
