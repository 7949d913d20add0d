"""Link mapping, index rewriting and request-target checks: what keeps traffic on the proxy."""

from __future__ import annotations

import json

import pytest

from connectors.api.errors import RegistryDataError
from connectors.classes import pypi_links
from connectors.proxy import links, routing, safety
from connectors.proxy.links import LinkMap

CLIENT = "http://proxy:8080/namespaces/ns/connectors/c"
LINKS = LinkMap(
    address="https://nexus.example.com/repository/pypi",
    extensions=(
        links.Extension("files", "https://files.example.org", credentialed=True),
        links.Extension("cdn", "https://cdn.example.net/pkgs", credentialed=False),
    ),
    aliases=pypi_links.path_aliases({"simplePath": "+simple"}),
    origin_key=links.origin_key("ns", "c", "Basic c2VjcmV0"),
)


def sealed(path: str, link_map: LinkMap = LINKS) -> str:
    """The client path the proxy hands out for `path` on the connector's own host."""
    mapped = link_map.to_client("https://nexus.example.com" + path, CLIENT)
    assert mapped is not None and mapped.startswith(CLIENT + "/_origin/")
    return mapped[len(CLIENT) :]


@pytest.mark.parametrize(
    ("rest", "url", "own"),
    [
        ("/simple/pkg/", "https://nexus.example.com/repository/pypi/+simple/pkg/", True),
        ("/legacy/", "https://nexus.example.com/repository/pypi/", True),
        ("/packages/a.whl", "https://nexus.example.com/repository/pypi/packages/a.whl", True),
        (sealed("/other/a.whl"), "https://nexus.example.com/other/a.whl", True),
        ("/_ext/files/p/a.whl", "https://files.example.org/p/a.whl", True),
        ("/_ext/cdn/p/a.whl", "https://cdn.example.net/pkgs/p/a.whl", False),
    ],
)
def test_client_paths_map_to_the_connectors_hosts_only(rest: str, url: str, own: bool):
    # Credentials go to the address, to its host through sealed links, and to the
    # extensions the Connector names ("files"); never to a class default ("cdn").
    upstream = LINKS.to_upstream(rest, "")
    assert upstream is not None
    assert (upstream.url, upstream.credentialed) == (url, own)
    assert upstream.read_only == rest.startswith(("/_ext/", "/_origin/"))


def test_an_unnamed_extension_maps_to_nothing():
    assert LINKS.to_upstream("/_ext/evil/x", "") is None


def test_the_registry_host_outside_the_address_is_reached_only_through_links_it_served():
    # A token holder cannot reach arbitrary paths of the registry host with the
    # connector's credentials: only what an index page of this connector linked to.
    good = sealed("/other/a.whl")
    seal = good.split("/")[2]
    assert LINKS.to_upstream("/_origin/other/a.whl", "") is None
    assert LINKS.to_upstream(f"/_origin/{seal}/other/b.whl", "") is None
    assert LINKS.to_upstream(f"/_origin/{seal}/admin/users", "") is None
    # The seal covers the query too: a sealed link leads to exactly one request.
    assert LINKS.to_upstream(good, "delete=true") is None
    assert LINKS.to_upstream(good, "").read_only  # type: ignore[union-attr]
    # A connector with other credentials seals differently: a rotated Secret retires seals.
    rotated = LinkMap(address=LINKS.address, origin_key=links.origin_key("ns", "c", "Basic bmV3"))
    assert rotated.to_upstream(good, "") is None


@pytest.mark.parametrize(
    ("upstream", "client"),
    [
        ("https://nexus.example.com/repository/pypi/+simple/pkg/", CLIENT + "/simple/pkg/"),
        (
            "https://nexus.example.com/repository/pypi/p/a.whl#sha256=ab",
            CLIENT + "/p/a.whl#sha256=ab",
        ),
        ("https://nexus.example.com/elsewhere/a.whl", CLIENT + sealed("/elsewhere/a.whl")),
        ("https://files.example.org/p/a.whl", CLIENT + "/_ext/files/p/a.whl"),
        ("https://evil.example.net/a.whl", None),
        ("http://nexus.example.com/repository/pypi/a.whl", None),  # other scheme, other origin
    ],
)
def test_upstream_urls_map_back_onto_the_proxy(upstream: str, client: str | None):
    assert LINKS.to_client(upstream, CLIENT) == client


def test_html_rewrite_keeps_fragments_and_every_other_attribute():
    page = (
        b'<a href="../../p/a-1.whl#sha256=00ff" data-requires-python="&gt;=3.9" '
        b'data-dist-info-metadata="sha256=11" data-yanked="">a-1.whl</a>\n'
        b"<a href='https://evil.example.net/x.whl'>x</a>"
    )
    page_url = "https://nexus.example.com/repository/pypi/+simple/a/"
    out = pypi_links.rewrite(
        page, "text/html; charset=utf-8", page_url, lambda u, _: LINKS.to_client(u, CLIENT)
    )
    assert (
        out
        == (
            f'<a href="{CLIENT}/p/a-1.whl#sha256=00ff" data-requires-python="&gt;=3.9" '
            'data-dist-info-metadata="sha256=11" data-yanked="">a-1.whl</a>\n'
            "<a href='https://evil.example.net/x.whl'>x</a>"
        ).encode()
    )


def test_json_rewrite_maps_urls_and_keeps_every_other_field():
    document = {
        "meta": {"api-version": "1.1"},
        "files": [
            {
                "filename": "a-1.whl",
                "url": "https://files.example.org/p/a-1.whl",
                "hashes": {"sha256": "00"},
                "yanked": "broken",
                "core-metadata": {"sha256": "11"},
            }
        ],
    }
    out = pypi_links.rewrite(
        json.dumps(document).encode(),
        "application/vnd.pypi.simple.v1+json",
        "https://nexus.example.com/repository/pypi/+simple/a/",
        lambda u, _: LINKS.to_client(u, CLIENT),
    )
    expected = json.loads(json.dumps(document))
    expected["files"][0]["url"] = CLIENT + "/_ext/files/p/a-1.whl"
    assert json.loads(out) == expected


def test_a_body_that_is_not_json_passes_through_untouched():
    body = b"{not json"
    assert pypi_links.rewrite(body, "application/json", "https://x/", lambda u, _: "y") == body


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        pytest.param("application/json", b'{"url": "https://x/a.whl', id="unterminated-string"),
        pytest.param("application/json", b'{"url": "http://[::1/a.whl"}', id="json-bad-host"),
        pytest.param("text/html", b'<a href="http://[::1/a.whl">a</a>', id="html-bad-host"),
    ],
)
def test_an_index_page_that_cannot_be_read_is_the_registrys_error(kind: str, body: bytes):
    with pytest.raises(RegistryDataError):
        pypi_links.rewrite(body, kind, "https://x/simple/a/", lambda u, _: "http://proxy/y")


def test_deeply_nested_json_is_rewritten_without_recursion():
    depth = 100_000
    body = b'{"a":' * depth + b'{"url": "https://x/a.whl"}' + b"}" * depth
    out = pypi_links.rewrite(body, "application/json", "https://x/", lambda u, _: "http://p/a")
    assert out == body.replace(b"https://x/a.whl", b"http://p/a")


def test_a_json_url_key_inside_a_string_is_not_taken_for_a_key():
    body = b'{"description": "see \\"url\\": \\"https://x/evil\\"", "url": "https://x/a"}'
    out = pypi_links.rewrite(
        body, "application/json", "https://x/", lambda u, _: "http://p/" + u[-1]
    )
    assert json.loads(out) == {"description": json.loads(body)["description"], "url": "http://p/a"}


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example.net/simple/",
        "//evil.example.net/simple/",
        "/simple/../../etc/passwd",
        "/simple/%2e%2e/x",
        "/simple/a%2fb",
        "/simple/a%5cb",
        "/simple\\..\\x",
        "/simple/a%00b",
        "/simple/?q=%0d%0aHost:evil",
        "*",
        # What servlet containers (Tomcat: Artifactory, Nexus 2) resolve to a dot segment.
        "/simple/..;/..;/files/secret.whl",
        "/simple/%2e%2e;x/files/secret.whl",
        "/simple/..%20/files/secret.whl",
        "/simple/%EF%BC%8E%EF%BC%8E/files/secret.whl",  # full-width dots
    ],
)
def test_request_targets_that_could_steer_elsewhere_are_refused(target: str):
    assert safety.unsafe_target_reason(target) is not None


@pytest.mark.parametrize(
    "target", ["/simple/", "/simple/my-pkg/", "/packages/a-1.0.tar.gz", "/simple/?format=json"]
)
def test_ordinary_index_paths_are_accepted(target: str):
    assert safety.unsafe_target_reason(target) is None


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("c-pypi.demo.svc.cluster.local", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("h" * 300, False),  # written back into every link of a rewritten page
        ('evil"><script>', False),
        ("", False),
    ],
)
def test_only_host_names_and_addresses_are_accepted_as_host(host: str, ok: bool):
    assert (safety.unsafe_host_reason(host) is None) == ok


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("c-pypi.demo", "/simple/", ("demo", "pypi", "", "/simple/")),
        ("c-pypi.demo.svc:80", "/x", ("demo", "pypi", "", "/x")),
        ("c-pypi.demo.svc.cluster.local", "/", ("demo", "pypi", "", "/")),
        (
            "127.0.0.1:8080",
            "/namespaces/demo/connectors/pypi/simple/",
            ("demo", "pypi", "/namespaces/demo/connectors/pypi", "/simple/"),
        ),
        ("127.0.0.1:8080", "/simple/", None),
        ("c-Pypi_x.demo", "/", None),
    ],
)
def test_requests_route_by_host_or_by_path(
    host: str, path: str, expected: tuple[str, str, str, str] | None
):
    found = routing.route(host, path)
    got = None if found is None else (found.namespace, found.name, found.base_path, found.rest)
    assert got == expected


SHA = "0123456789abcdef" * 4


def test_a_link_with_a_hash_goes_out_under_the_cache_prefix_and_comes_back_with_it():
    upstream = "https://nexus.example.com/repository/pypi/packages/a-1.whl"
    client = LINKS.to_client(upstream, CLIENT, SHA)
    assert client == f"{CLIENT}/_sha256/{SHA}/packages/a-1.whl"
    back = LINKS.to_upstream(client[len(CLIENT) :], "")
    assert back is not None
    assert (back.url, back.sha256, back.read_only) == (upstream, SHA, True)
    # PEP 658 metadata beside the file has a hash of its own, not the file's.
    metadata = LINKS.to_upstream(f"/_sha256/{SHA}/packages/a-1.whl.metadata", "")
    assert metadata is not None
    assert (metadata.url, metadata.sha256) == (upstream + ".metadata", None)
    # Not a hash, or leading nowhere the connector names: no such path.
    assert LINKS.to_upstream(f"/_sha256/{SHA[:-1]}/packages/a-1.whl", "") is None
    assert LINKS.to_upstream(f"/_sha256/{SHA}/_ext/evil/a-1.whl", "") is None
    assert LINKS.to_client("https://evil.example.net/a.whl", CLIENT, SHA) is None


def test_the_hash_each_link_advertises_reaches_the_mapper_in_html_and_json():
    seen: dict[str, str | None] = {}

    def mapper(url: str, sha256: str | None) -> str | None:
        seen[url.partition("#")[0]] = sha256
        return None

    html_page = (
        f'<a href="a-1.whl#sha256={SHA.upper()}">a</a>'
        '<a href="b-1.whl#md5=00">b</a><a href="c-1.whl">c</a>'
    ).encode()
    pypi_links.rewrite(html_page, "text/html", "https://r/simple/a/", mapper)
    assert seen == {"https://r/simple/a/a-1.whl": SHA, "https://r/simple/a/b-1.whl": None,
                    "https://r/simple/a/c-1.whl": None}  # fmt: skip

    seen.clear()
    other = "f" * 64
    meta = {"sha256": "e" * 64}
    document = {
        "files": [
            # PyPI writes keys in order (hashes before url), devpi url first.
            {"hashes": {"sha256": SHA}, "url": "https://r/a-1.whl", "core-metadata": meta},
            {"url": "https://r/b-1.whl", "core-metadata": meta, "hashes": {"sha256": other}},
            {"url": "https://r/c-1.whl", "core-metadata": meta},
            {"url": "https://r/d-1.whl", "sha256": other},  # only `hashes` counts
            {"url": "https://r/twice.whl", "hashes": {"sha256": SHA}},
            {"url": "https://r/twice.whl", "hashes": {"sha256": other}},
        ]
    }  # fmt: skip
    pypi_links.rewrite(json.dumps(document).encode(), "application/json", "https://r/", mapper)
    assert seen == {"https://r/a-1.whl": SHA, "https://r/b-1.whl": other,
                    "https://r/c-1.whl": None, "https://r/d-1.whl": None,
                    "https://r/twice.whl": None}  # fmt: skip


def test_deep_json_is_rewritten_but_gives_no_hashes():
    depth = 100
    body = (
        b'{"a":' * depth + b'{"url": "https://x/a.whl", "hashes": {"sha256": "' + SHA.encode()
        + b'"}}' + b"}" * depth
    )  # fmt: skip
    hashes: list[str | None] = []

    def mapped(url: str, digest: str | None) -> str:
        hashes.append(digest)
        return "http://p/a"

    out = pypi_links.rewrite(body, "application/json", "https://x/", mapped)
    assert out == body.replace(b"https://x/a.whl", b"http://p/a")
    assert hashes == [None]


@pytest.mark.parametrize(
    ("params", "segment"),
    [
        ({}, "simple"),
        ({"simplePath": "+simple"}, "+simple"),
        ({"simplePath": "/pypi/simple/"}, "pypi/simple"),
        ({"simplePath": "/"}, "simple"),
        ({"simplePath": ""}, "simple"),
    ],
)
def test_the_index_segment_is_read_one_way_for_the_proxy_and_the_reconciler(params, segment):
    assert pypi_links.index_segment(params) == segment
    aliases = dict(pypi_links.path_aliases(params))
    assert aliases.get("simple", "simple") == segment
