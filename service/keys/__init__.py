"""Verification keys: where they come from (a secret, a JWKS file, a JWKS over HTTP) and how they are chosen."""
