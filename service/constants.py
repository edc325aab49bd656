"""Names shared by auth/ and ops/, kept here so neither imports the other."""

REQUEST_ID_HEADER = "X-Request-ID"
AUTH_ERROR_ENV = "service.auth_error"  # WSGI environ key: the auth failure code, for the access log line
