"""The ceiling: a bare Falcon ping app, served by the same gunicorn.conf.py as the service."""

import falcon

from service.resources import PUBLIC_PING


class Ping:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = PUBLIC_PING


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


app = falcon.App()
app.add_route("/ping", Ping())
app.add_route("/healthz", Health())
