"""Running the service: metrics, logs, request ids, gunicorn's logger and the start-up check."""
