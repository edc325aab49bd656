"""URL normalisation (service/urls.py): what a DPoP proof's htu is compared with (RFC 3986 section 6.2.2)."""

from __future__ import annotations

import falcon.testing
import pytest

from service.urls import ApiUrls, normalize


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://api.example.com/secured/ping", "https://api.example.com/secured/ping"),
        ("HTTPS://API.Example.COM/secured/ping", "https://api.example.com/secured/ping"),
        ("https://api.example.com:443/secured/ping", "https://api.example.com/secured/ping"),
        ("http://api.example.com:80/secured/ping", "http://api.example.com/secured/ping"),
        ("https://api.example.com:8443/secured/ping", "https://api.example.com:8443/secured/ping"),
        ("https://api.example.com/secured/ping?a=1#f", "https://api.example.com/secured/ping"),
        ("https://api.example.com/%7Euser/%2fpath%2F", "https://api.example.com/~user/%2Fpath%2F"),
        ("https://api.example.com", "https://api.example.com/"),
        ("http://[::1]:8000/p", "http://[::1]:8000/p"),
        ("https://api.example.com/caf\u00e9", "https://api.example.com/caf%C3%A9"),
    ],
)
def test_urls_are_normalised(url, normalized):
    assert normalize(url) == normalized


@pytest.mark.parametrize(
    "url",
    ["ftp://api.example.com/", "//api.example.com/", "/secured/ping", "https:///path", "https://u:p@host/",
     "https://host:port/", "https://host:70000/", 42, None, "https://" + "a" * 9000],
)  # fmt: skip
def test_anything_but_an_absolute_http_url_normalises_to_none(url):
    assert normalize(url) is None


def request(path="/secured/ping", **kwargs) -> falcon.Request:
    return falcon.testing.create_req(path=path, **kwargs)


def test_without_public_url_the_request_url_comes_from_scheme_host_and_raw_path():
    urls = ApiUrls(None, "/.well-known/oauth-protected-resource")
    req = request(host="API.example.com", port=8443, scheme="https")
    req.env["RAW_URI"] = "/secured/%70ing?x=1"
    assert urls.request_url(req) == "https://api.example.com:8443/secured/ping"
    assert urls.resource(req) == "https://API.example.com:8443"
    assert urls.metadata_url(req) == "https://API.example.com:8443/.well-known/oauth-protected-resource"


def test_an_absolute_form_request_target_uses_its_path():
    urls = ApiUrls(None, "/m")
    req = request(host="api.example.com")
    req.env["RAW_URI"] = "http://elsewhere.example/secured/ping?q"
    assert urls.request_url(req) == "http://api.example.com/secured/ping"


def test_with_public_url_every_url_comes_from_it():
    urls = ApiUrls("https://example.com/api", "/.well-known/oauth-protected-resource")
    req = request(host="10.0.0.7", port=8000)
    req.env["RAW_URI"] = "/secured/ping"
    assert urls.request_url(req) == "https://example.com/api/secured/ping"
    assert urls.resource(req) == "https://example.com/api"
    assert urls.metadata_url(req) == "https://example.com/.well-known/oauth-protected-resource/api"


def test_a_host_that_is_not_plain_gives_no_resource_or_metadata_url():
    urls = ApiUrls(None, "/m")
    req = request(host='evil"host')
    assert urls.resource(req) is None
    assert urls.metadata_url(req) is None
