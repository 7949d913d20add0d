"""Which headers cross the proxy: a client's credentials, cookies and forwarding claims
never reach a registry; the connector's credentials go only where the connector's own
registry is; a registry's cookies and hop-by-hop headers never reach a client; a redirect
stays on the proxy where the connector covers its target, and otherwise leaves without
any password in it."""

from __future__ import annotations

import pytest

from connectors.api.errors import RegistryDataError
from connectors.proxy import headers, links
from connectors.proxy.links import LinkMap
from connectors.registry.access import BasicCredentials

CLIENT = "http://proxy:8080/namespaces/ns/connectors/c"
LINKS = LinkMap(
    address="https://registry.example/repo",
    extensions=(links.Extension("files", "https://files.example.org", credentialed=False),),
    origin_key=links.origin_key("ns", "c", "Basic c2VjcmV0"),
)
CREDENTIALS = BasicCredentials("robot", "registry-password")


def test_a_registry_sees_the_clients_allowed_headers_and_the_connectors_credentials():
    sent = headers.to_registry(
        {
            "User-Agent": "pip/25", "Accept": "text/html", "Range": "bytes=0-9",
            "Authorization": "Basic the-clients-token", "Cookie": "session=1",
            "X-Forwarded-For": "10.0.0.1", "X-HTTP-Method-Override": "DELETE",
            "Connection": "keep-alive, X-Secret", "Accept-Encoding": "gzip, br",
        },
        credentials=CREDENTIALS,
        validators={"If-None-Match": '"v1"'},
    )  # fmt: skip
    assert sent == {
        "User-Agent": "pip/25", "Accept": "text/html", "Range": "bytes=0-9",
        "If-None-Match": '"v1"', "Accept-Encoding": "identity",
        "Authorization": CREDENTIALS.authorization(),
    }  # fmt: skip


def test_no_credentials_go_where_the_connectors_own_registry_is_not():
    sent = headers.to_registry(
        {"Authorization": "Bearer the-clients-token"}, credentials=None, validators={}
    )
    assert "Authorization" not in sent


def test_a_client_sees_the_registrys_allowed_headers_only():
    passed, off_host = headers.to_client(
        {
            "Content-Type": "text/html", "ETag": '"v1"', "Set-Cookie": "registry=1",
            "Connection": "close", "Content-Length": "12", "Server": "nexus",
            "WWW-Authenticate": 'Basic realm="nexus"', "X-PyPI-Last-Serial": "7",
        },
        "https://registry.example/repo/simple/x/", LINKS, CLIENT,
    )  # fmt: skip
    assert passed == {"Content-Type": "text/html", "ETag": '"v1"', "X-PyPI-Last-Serial": "7"}
    assert off_host is None


def test_a_redirect_the_connector_covers_stays_on_the_proxy():
    passed, off_host = headers.to_client(
        {"Location": "../y/"}, "https://registry.example/repo/simple/x/", LINKS, CLIENT
    )
    assert passed["Location"] == CLIENT + "/simple/y/"
    assert off_host is None
    passed, _ = headers.to_client(
        {"Location": "https://files.example.org/a.whl"}, "https://registry.example/repo/x",
        LINKS, CLIENT,
    )  # fmt: skip
    assert passed["Location"] == CLIENT + "/_ext/files/a.whl"


def test_a_redirect_off_the_covered_hosts_is_passed_on_without_its_password_and_named():
    passed, off_host = headers.to_client(
        {"Location": "https://mirror:mirror-secret@mirror.example:8443/simple/x/?a=1"},
        "https://registry.example/repo/simple/x/", LINKS, CLIENT,
    )  # fmt: skip
    assert passed["Location"] == "https://mirror.example:8443/simple/x/?a=1"
    assert off_host == "https://mirror.example:8443"


def test_an_unreadable_redirect_is_the_registrys_fault():
    with pytest.raises(RegistryDataError, match="unreadable URL"):
        headers.to_client({"Location": "http://[::1"}, "https://registry.example/", LINKS, CLIENT)


def test_a_page_is_revalidated_with_whichever_validators_the_registry_gave():
    assert headers.validators(
        {"ETag": '"v2"', "Last-Modified": "Sun, 29 Nov 2026 06:00:00 GMT"}
    ) == {
        "If-None-Match": '"v2"',
        "If-Modified-Since": "Sun, 29 Nov 2026 06:00:00 GMT",
    }
    assert headers.validators({"Last-Modified": "Sun, 29 Nov 2026 06:00:00 GMT"}) == {
        "If-Modified-Since": "Sun, 29 Nov 2026 06:00:00 GMT"
    }
    # Without validators the page is fetched whole and compared by hash instead.
    assert headers.validators({"Content-Type": "text/html", "Cache-Control": "max-age=600"}) == {}
