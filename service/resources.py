"""The API's resources. Each says what it needs with an `auth` attribute; verified claims are on
`req.context.claims`."""

from __future__ import annotations

import json

import falcon

from service.auth.forward import Forwarded
from service.auth.middleware import Requires
from service.errors import KEYS_NOT_FETCHED, JwksUnavailable
from service.keys.issuers import Issuers
from service.ops.metrics import CONTENT_TYPE, Metrics
from service.urls import ApiUrls

PUBLIC_PING = "All good. You don't need to be authenticated to call this"
SECURED_PING = "All good. You only get this message if you're authenticated"
SCOPED_PING = "All good. You only get this message if you're authenticated and have the read:messages scope"


class _TextResource:
    """Answers GET with a fixed text/plain message."""

    message = ""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = self.message


class PublicPing(_TextResource):
    message = PUBLIC_PING


class SecuredPing(_TextResource):
    auth = Requires()
    message = SECURED_PING


class ScopedPing(_TextResource):
    auth = Requires(scopes=("read:messages",))
    message = SCOPED_PING


class Health:
    """Liveness: 200 while the process serves requests (GET, or HEAD for probes that send it)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}

    on_head = on_get


class Readiness:
    """Readiness: 200 when tokens can be verified (keys held, or an HS secret), else 503 with the reason.

    With several issuers it is 200 while any issuer's keys are held, and the body gives each one's state: an
    identity provider is a dependency every replica shares, so its outage must not take every replica out of
    service and turn one issuer's 503s into everyone's (the replay store's rule; docs/issuers.md)."""

    def __init__(self, issuers: Issuers, retry_after: int):
        self._issuers = issuers
        self._retry_after = retry_after

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        issuers = self._issuers
        if not issuers.ready or len(issuers.all) > 1:
            issuers.start()  # a probe is a reason to try a provider again (at most once per cooldown)
        if not issuers.ready:
            raise JwksUnavailable(self._retry_after, KEYS_NOT_FETCHED).to_http()
        if len(issuers.all) > 1:
            resp.media = {"status": "ready", "issuers": issuers.states()}
        else:
            resp.media = {"status": "ready"}

    on_head = on_get


class ProtectedResourceMetadata:
    """RFC 9728 metadata: how an OAuth client gets a token this API accepts.

    `resource` is the URL the client reached the API at (PUBLIC_URL, else the request's scheme and host), as
    RFC 9728 section 3.3 requires; everything else is fixed at start. A request whose Host is not a plain
    host[:port] gets 400, since the document would repeat it.
    """

    def __init__(
        self,
        urls: ApiUrls,
        authorization_servers: list[str],
        scopes: set[str],
        *,
        dpop_algorithms: tuple[str, ...] = (),
        dpop_required: bool = False,
    ):
        self._urls = urls
        document: dict[str, object] = {}
        if authorization_servers:
            document["authorization_servers"] = list(authorization_servers)
        document["scopes_supported"] = sorted(scopes)
        document["bearer_methods_supported"] = ["header"]
        if dpop_algorithms:
            document["dpop_signing_alg_values_supported"] = list(dpop_algorithms)
            document["dpop_bound_access_tokens_required"] = dpop_required
        self._rest = json.dumps(document)[1:]  # the members after "resource", which comes first
        self._cached: tuple[str, bytes] | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resource = self._urls.resource(req)
        if resource is None:
            raise falcon.HTTPBadRequest()
        cached = self._cached
        if cached is None or cached[0] != resource:
            cached = self._cached = (resource, (f'{{"resource": {json.dumps(resource)}, ' + self._rest).encode())
        resp.content_type = falcon.MEDIA_JSON
        resp.cache_control = ["public", "max-age=3600"]
        resp.vary = ["Host"]
        resp.data = cached[1]


class MetricsText:
    """The Prometheus scrape target: every metric in the text format (all workers' under gunicorn). Public."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE
        resp.data = self._metrics.exposition()


class ForwardAuthCheck:
    """A forward-auth endpoint (service.auth.forward): the auth middleware checks the original request that the
    proxy names (`forwarded` says how) and sets the identity headers; an allowed check is 200 with no body.

    Every method is answered, since Envoy's ext_authz check uses the original request's own."""

    def __init__(self, forwarded: Forwarded):
        self.forwarded = forwarded

    def _allow(self, req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        resp.status = falcon.HTTP_200
        resp.data = b""


for _method in falcon.COMBINED_METHODS:
    setattr(ForwardAuthCheck, "on_" + _method.lower(), ForwardAuthCheck._allow)
