"""The seed quick start against a real pypiserver that requires a password for everything,
with real twine, pip and uv talking to a real `connectors serve`."""

from __future__ import annotations

import configparser
import json
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from connectors.auth import tokens
from connectors.auth.keys import KeyRing
from connectors.standalone.localregistry import LocalRegistry
from tests.support import clients, leaks, wire
from tests.support import seed as seed_manifests
from tests.support.standalone import Standalone
from tests.support.wheels import make_wheel, sha256_of

NS = "connectors-pypi-demo"
NAME = "pypi-connector"


@pytest.fixture(scope="module")
def seed(standalone: Standalone, pypi_registry: LocalRegistry) -> Standalone:
    (standalone.config_dir / NS).mkdir(exist_ok=True)
    (standalone.config_dir / NS / "seed.yaml").write_text(
        seed_manifests.step_2(
            username=pypi_registry.username,
            password=pypi_registry.password,
            address=pypi_registry.url,
        )
    )
    standalone.wait_ready(NS, NAME)
    return standalone


@pytest.fixture(scope="module")
def uploaded(
    seed: Standalone, pypi_registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """sampleproject 4.0.0 uploaded with twine through the proxy; returns the wheel."""
    work = tmp_path_factory.mktemp("upload")
    wheel = make_wheel(work / "dist", "sampleproject", "4.0.0", payload=b"hello" * 1000)
    seed.render(NS, NAME, "pypirc", into=work)
    result = clients.twine_upload(work / ".pypirc", wheel)
    assert result.returncode == 0, clients.explain(result)
    return wheel


def test_seed_connector_is_ready_and_listed_with_the_seed_columns(
    seed: Standalone, pypi_registry: LocalRegistry
):
    lines = seed.get_connectors(NS).splitlines()
    assert lines[0].split() == ["NAME", "CLASS", "ADDRESS", "READY", "REASON", "AGE"]
    name, cls, address, ready, age = lines[1].split()
    assert (name, cls, address, ready) == (NAME, "pypi", pypi_registry.url, "True")
    assert age[-1] in "smhd"
    row = seed.status_row(NS, NAME)
    assert row is not None
    assert row["status"]["proxy"]["httpAddress"]["url"] == seed.connector_url(NS, NAME)


def test_twine_upload_through_the_proxy_lands_in_the_registry(
    uploaded: Path, pypi_registry: LocalRegistry
):
    stored = pypi_registry.packages / uploaded.name
    assert stored.is_file()
    assert sha256_of(stored) == sha256_of(uploaded)


def test_pip_install_through_the_proxy_with_the_rendered_pip_conf(
    seed: Standalone, uploaded: Path, tmp_path: Path
):
    seed.render(NS, NAME, "pipconf", into=tmp_path)
    result = clients.pip_install(
        tmp_path / "pip.conf", "sampleproject==4.0.0", target=tmp_path / "site"
    )
    assert result.returncode == 0, clients.explain(result)
    assert "Successfully installed sampleproject-4.0.0" in result.stdout
    assert (tmp_path / "site" / "sampleproject" / "payload.bin").read_bytes() == b"hello" * 1000
    proxy = urlsplit(seed.connector_url(NS, NAME))
    looked = f"Looking in indexes: http://{NS}-{NAME}:****@{proxy.netloc}{proxy.path}/simple/"
    assert result.stdout.splitlines()[0] == looked  # pip looked at the proxy and nowhere else


def test_uv_installs_through_the_proxy_with_the_rendered_uv_toml(
    seed: Standalone, uploaded: Path, tmp_path: Path
):
    seed.render(NS, NAME, "uvtoml", into=tmp_path)
    result = clients.uv_pip_install(
        tmp_path / "uv.toml", "sampleproject==4.0.0", target=tmp_path / "site"
    )
    assert result.returncode == 0, clients.explain(result)
    assert (tmp_path / "site" / "sampleproject" / "__init__.py").is_file()


def test_rendered_pip_conf_has_the_seed_shape_and_a_token_for_this_connector(seed: Standalone):
    text = seed.render(NS, NAME, "pipconf")["pip.conf"]
    config = configparser.ConfigParser()
    config.read_string(text)
    assert config.sections() == ["global", "install"]
    index = urlsplit(config["global"]["index-url"])
    proxy = urlsplit(seed.connector_url(NS, NAME))
    assert index.username == f"{NS}-{NAME}"
    assert (index.hostname, index.port) == (proxy.hostname, proxy.port)
    assert index.path == proxy.path + "/simple/"
    assert config["global"]["timeout"] == "30"
    assert config["install"]["trusted-host"] == config["global"]["trusted-host"] == proxy.hostname
    identity = tokens.verify(
        KeyRing(seed.place.state.keys), index.password or "", audience=seed.connector_url(NS, NAME)
    )
    assert identity.expires_at > 0


def test_rendered_pypirc_has_the_seed_shape(seed: Standalone):
    text = seed.render(NS, NAME, "pypirc")[".pypirc"]
    config = configparser.ConfigParser()
    config.read_string(text)
    assert config["distutils"]["index-servers"].split() == ["connectors-pypi"]
    section = config["connectors-pypi"]
    assert section["repository"] == seed.connector_url(NS, NAME) + "/"
    assert section["username"] == f"{NS}-{NAME}"
    tokens.verify(
        KeyRing(seed.place.state.keys), section["password"], audience=seed.connector_url(NS, NAME)
    )


def test_rendered_uv_toml_and_netrc_parse_and_point_at_the_proxy(seed: Standalone):
    files = seed.render(NS, NAME, "uvtoml", "netrc")
    index = tomllib.loads(files["uv.toml"])["index"][0]
    assert urlsplit(index["url"]).path == urlsplit(seed.connector_url(NS, NAME)).path + "/simple/"
    assert index["publish-url"].endswith(urlsplit(seed.connector_url(NS, NAME)).path + "/")
    netrc_words = files[".netrc"].split()
    assert netrc_words[:4] == ["machine", "127.0.0.1", "login", f"{NS}-{NAME}"]


def test_json_api_links_are_rewritten_to_the_proxy(seed: Standalone, uploaded: Path):
    token = seed.token(NS, NAME)
    reply = wire.request(
        "GET", seed.connector_url(NS, NAME) + "/sampleproject/json", headers=wire.basic(token)
    )
    assert reply.status == 200
    urls = [f["url"] for files in json.loads(reply.body)["releases"].values() for f in files]
    assert urls, reply.body
    assert all(u.startswith(seed.connector_url(NS, NAME) + "/packages/") for u in urls)
    download = wire.request("GET", urls[0], headers=wire.basic(token))
    assert download.status == 200
    assert download.body == uploaded.read_bytes()


def test_head_and_range_requests_pass_through(seed: Standalone, uploaded: Path):
    token = seed.token(NS, NAME)
    url = f"{seed.connector_url(NS, NAME)}/packages/{uploaded.name}"
    head = wire.request("HEAD", url, headers=wire.basic(token))
    assert head.status == 200
    assert head.header("Content-Length") == str(uploaded.stat().st_size)
    assert head.body == b""
    ranged = wire.request("GET", url, headers={**wire.basic(token), "Range": "bytes=0-9"})
    assert ranged.status == 206
    assert ranged.body == uploaded.read_bytes()[:10]
    assert (
        ranged.header(
            "Content-Range",
        )
        == f"bytes 0-9/{uploaded.stat().st_size}"
    )


def test_token_is_accepted_as_bearer_too(seed: Standalone, uploaded: Path):
    reply = wire.request(
        "GET",
        seed.connector_url(NS, NAME) + "/simple/sampleproject/",
        headers={"Authorization": f"Bearer {seed.token(NS, NAME)}"},
    )
    assert reply.status == 200
    assert uploaded.name.encode() in reply.body


def test_index_links_stay_on_the_proxy_and_keep_their_hash_fragment(
    seed: Standalone, uploaded: Path
):
    reply = wire.request(
        "GET",
        seed.connector_url(NS, NAME) + "/simple/sampleproject/",
        headers=wire.basic(seed.token(NS, NAME)),
    )
    assert reply.status == 200
    digest = sha256_of(uploaded)
    expected = (
        f'href="{seed.connector_url(NS, NAME)}/_sha256/{digest}/packages/{uploaded.name}'
        f'#sha256={digest}"'
    )
    assert expected.encode() in reply.body


def test_read_only_token_downloads_but_cannot_upload(seed: Standalone, uploaded: Path):
    token = seed.token(NS, NAME, read_only=True)
    index = wire.request(
        "GET", seed.connector_url(NS, NAME) + "/simple/", headers=wire.basic(token)
    )
    assert index.status == 200
    upload = wire.request(
        "POST", seed.connector_url(NS, NAME) + "/", headers=wire.basic(token), body=b"x"
    )
    assert upload.status == 403
    assert b"may not upload" in upload.body


def test_upstream_status_and_body_come_back_on_a_refused_upload(seed: Standalone):
    # pypiserver refuses a form without a file; the client must see the registry's answer.
    reply = wire.request(
        "POST",
        seed.connector_url(NS, NAME) + "/legacy/",
        headers={
            **wire.basic(seed.token(NS, NAME)),
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=b":action=file_upload&name=x&version=1",
    )
    assert reply.status == 400
    assert reply.body  # the registry's own explanation, not ours
    assert reply.header("Location") is None  # no redirect for uploads


def test_the_registry_password_reaches_nothing_a_client_or_operator_sees(
    seed: Standalone, uploaded: Path, pypi_registry: LocalRegistry, tmp_path: Path
):
    # Exercise every kind of answer once more, then scan all recorded so far.
    base = seed.connector_url(NS, NAME)
    token = seed.token(NS, NAME)
    for method, path, headers in [
        ("GET", "/simple/", wire.basic(token)),
        ("GET", "/simple/sampleproject/", {}),
        ("GET", "/sampleproject/json", wire.basic(token)),
        ("HEAD", f"/packages/{uploaded.name}", wire.basic(token)),
        ("GET", "/simple/", wire.basic("garbage")),
        ("GET", "/simple/nope/", wire.basic(token)),
    ]:
        wire.request(method, base + path, headers=headers)
    seed.render(NS, NAME, "pipconf", "pypirc", "uvtoml", "poetry", "pdm", "hatch", "netrc")
    seed.get_connectors(NS)
    assert seed.leaked_places() == []
    # The scan is not blind: the password is found where it is meant to be.
    assert leaks.find_leaks(
        leaks.secrets_under(seed.config_dir),
        [("the Secret itself", (seed.config_dir / NS / "seed.yaml").read_bytes())],
    ) == ["the Secret itself"]
