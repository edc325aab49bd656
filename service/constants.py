"""Names shared by auth/ and ops/, kept here so neither imports the other."""

REQUEST_ID_HEADER = "X-Request-ID"
AUTH_ERROR_ENV = "service.auth_error"  # WSGI environ key: the auth failure code, for the access log line
# WSGI environ key: (convention, original method, original path) of a forward-auth check, for the access log line
FORWARDED_ENV = "service.forwarded"
