"""A peer of the service for `make loadtest`: Auth0's Python SDK for APIs (auth0-api-python) verifying each
request's bearer token in a minimal ASGI app, under uvicorn's workers.

    JWT_JWKS_FILE=jwks.json JWT_ISSUER=https://issuer/ JWT_AUDIENCE=https://api \\
        .venv/bin/python -m uvicorn loadtest.peers.auth0_python:app --workers 2 --loop uvloop --http httptools

GET /ping answers 200 with no verification (what the server and this app alone cost); GET /secured/ping answers
200 with a small JSON body when `ApiClient.verify_access_token` accepts the token, and
the SDK's own status for its error otherwise (401 for a token it refuses, 400 for none). The SDK finds its keys by
OIDC discovery at https://{domain}/.well-known/openid-configuration and then the document's jwks_uri; its
documented `custom_fetch` option answers both from here (the discovery document names JWT_ISSUER and a jwks_uri
under it, the JWKS is the harness's file), so nothing leaves the machine while the SDK's own code path is the one
it runs in production: its default in-memory cache holds both for its 600 s, and every request is parsed, its key
looked up by kid and imported, its RS256 signature checked, and iss, aud, exp and iat compared (api_client.py,
verify_access_token; nothing caches a verified token). With PEER_READY_DIR set, each worker writes a file named
after its pid there at ASGI lifespan startup, when it has imported everything and is about to serve.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

# Authlib 1.x warns, in every worker at import, that the SDK's authlib.jose is deprecated: the SDK's concern, not
# the load test's. authlib.deprecate puts its own "always" filter first when imported, so this one goes after it.
with warnings.catch_warnings():
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from auth0_api_python import ApiClient, ApiClientOptions
    from auth0_api_python.errors import BaseAuthError

ISSUER, AUDIENCE = os.environ["JWT_ISSUER"], os.environ["JWT_AUDIENCE"]
DOMAIN = ISSUER.removeprefix("https://").rstrip("/")
DISCOVERY = f"https://{DOMAIN}/.well-known/openid-configuration"
JWKS_URI = f"https://{DOMAIN}/.well-known/jwks.json"
BODY = json.dumps({"message": "All good. You only get this message if you're authenticated"}).encode()
PUBLIC_BODY = json.dumps({"message": "All good. You don't need to be authenticated to call this"}).encode()
JSON = [(b"content-type", b"application/json")]


async def fetch(url: str) -> dict:
    """The SDK's `custom_fetch`: the discovery document and the JWKS, as the issuer would serve them."""
    if url == DISCOVERY:
        return {"issuer": ISSUER, "jwks_uri": JWKS_URI}
    if url == JWKS_URI:
        return json.loads(Path(os.environ["JWT_JWKS_FILE"]).read_text())
    raise LookupError(f"auth0_python: no document at {url}")


client = ApiClient(ApiClientOptions(domain=DOMAIN, audience=AUDIENCE, custom_fetch=fetch))


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/ping":  # no verification: what uvicorn and this app alone cost
        await answer(send, 200, PUBLIC_BODY)
        return
    if scope["path"] != "/secured/ping":
        await answer(send, 404, b'{"error":"not_found"}')
        return
    scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        await answer(send, 401, b'{"error":"invalid_request"}', [(b"www-authenticate", b'Bearer realm="api"')])
        return
    try:
        await client.verify_access_token(access_token=token)
    except BaseAuthError as refused:
        headers = [(name.lower().encode(), value.encode()) for name, value in refused.get_headers().items()]
        await answer(send, refused.get_status_code(), json.dumps({"error": refused.get_error_code()}).encode(), headers)
        return
    await answer(send, 200, BODY)


async def answer(send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*JSON, *headers]})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("PEER_READY_DIR"):
                Path(os.environ["PEER_READY_DIR"], str(os.getpid())).touch()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
