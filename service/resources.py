"""The API's resources. Each says what it needs with an `auth` attribute; verified claims are on
`req.context.claims`."""

from __future__ import annotations

import falcon

from service.auth import Requires

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
