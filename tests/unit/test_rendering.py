"""The built-in pypi class renders the seed's files, and templates stay in their sandbox."""

from __future__ import annotations

import configparser
import dataclasses
import netrc
import tomllib
from pathlib import Path

import pytest

from connectors.api import manifests
from connectors.api.errors import NotFoundError, TemplateError
from connectors.api.resources import Configuration, Connector, ConnectorClass
from connectors.classes.builtin import builtin_classes
from connectors.rendering import render

SEED_PROXY = "http://c-pypi-connector.connectors-pypi-demo.svc.cluster.local"
TOKEN = "eyJhbGciOiJFZERTQSJ9.payload.signature"


def seed_connector(**spec: str) -> Connector:
    extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
    text = (
        "apiVersion: connectors.alauda.io/v1alpha1\nkind: Connector\n"
        "metadata: {name: pypi-connector, namespace: connectors-pypi-demo}\n"
        "spec:\n  connectorClassName: pypi\n  address: https://nexus.example.com/repository/pypi\n"
        + extra
    )
    (connector,) = manifests.parse_text(text, source="test")
    assert isinstance(connector, Connector)
    return connector


def pypi() -> ConnectorClass:
    return next(c for c in builtin_classes() if c.name == "pypi")


def rendered(name: str, proxy_url: str = SEED_PROXY) -> dict[str, str]:
    context = render.RenderContext(proxy_url=proxy_url, token=TOKEN)
    return render.render_configuration(seed_connector(), pypi(), name, context)


def test_pip_conf_matches_the_seed():
    files = rendered("pipconf")
    assert list(files) == ["pip.conf"]
    parsed = configparser.ConfigParser()
    parsed.read_string(files["pip.conf"])
    assert parsed["global"]["index-url"] == (
        f"http://connectors-pypi-demo-pypi-connector:{TOKEN}"
        "@c-pypi-connector.connectors-pypi-demo.svc.cluster.local/simple/"
    )
    assert parsed["global"]["timeout"] == "30"
    # In [global] so pip download, wheel and index trust the plain-http proxy too; the
    # seed's [install] line stays.
    host = "c-pypi-connector.connectors-pypi-demo.svc.cluster.local"
    assert parsed["global"]["trusted-host"] == parsed["install"]["trusted-host"] == host


def test_pip_conf_for_an_https_proxy_trusts_nothing_extra():
    files = rendered("pipconf", proxy_url="https://proxy.example.com/namespaces/a/connectors/b")
    assert "trusted-host" not in files["pip.conf"]
    assert "@proxy.example.com/namespaces/a/connectors/b/simple/" in files["pip.conf"]


def test_pypirc_matches_the_seed():
    parsed = configparser.ConfigParser()
    parsed.read_string(rendered("pypirc")[".pypirc"])
    assert parsed["distutils"]["index-servers"].split() == ["connectors-pypi"]
    section = parsed["connectors-pypi"]
    assert section["repository"] == SEED_PROXY + "/"
    assert section["username"] == "connectors-pypi-demo-pypi-connector"
    assert section["password"] == TOKEN


def test_an_unknown_configuration_names_the_ones_there_are():
    with pytest.raises(
        NotFoundError, match=r"it has: pipconf, pypirc, uvtoml, poetry, pdm, hatch, netrc"
    ):
        rendered("gradle")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ connector.__class__.__init__.__globals__ }}",
        "{% for k in params.update({'a': 1}) %}{% endfor %}",
        "{{ lipsum.__globals__['os'].environ }}",
        "{% include '/etc/passwd' %}",
        "{{ undefined_variable }}",
        "{{ 1 / 0 }}",
    ],
)
def test_a_template_cannot_reach_python_internals_files_or_state(template: str):
    cls = pypi()
    hostile = dataclasses.replace(
        cls,
        spec=dataclasses.replace(
            cls.spec, configurations=(Configuration(name="evil", data={"f": template}),)
        ),
    )
    context = render.RenderContext(proxy_url=SEED_PROXY, token=TOKEN)
    with pytest.raises(TemplateError) as caught:
        render.render_configuration(seed_connector(), hostile, "evil", context)
    assert TOKEN not in str(caught.value)


def test_connector_params_override_class_defaults():
    connector = seed_connector(params="[{name: simplePath, value: +simple}]")
    assert render.effective_params(connector, pypi())["simplePath"] == "+simple"
    assert render.effective_params(seed_connector(), pypi())["simplePath"] == "simple"


def test_render_context_repr_hides_the_token():
    assert TOKEN not in repr(render.RenderContext(proxy_url=SEED_PROXY, token=TOKEN))


def test_netrc_has_one_entry_per_host_that_python_netrc_reads(tmp_path: Path):
    first = seed_connector()
    second = dataclasses.replace(first, metadata=dataclasses.replace(first.metadata, name="b"))
    third = dataclasses.replace(first, metadata=dataclasses.replace(first.metadata, name="c"))
    shared = "http://127.0.0.1:8080/namespaces/connectors-pypi-demo/connectors"
    files = render.render_configuration(
        first,
        pypi(),
        "netrc",
        render.RenderContext(f"{shared}/pypi-connector", TOKEN),
        others=[
            (second, render.RenderContext(f"{shared}/b", TOKEN)),
            (third, render.RenderContext("http://c-c.connectors-pypi-demo.svc", TOKEN)),
        ],
    )
    (tmp_path / ".netrc").write_text(files[".netrc"])
    parsed = netrc.netrc(str(tmp_path / ".netrc"))
    assert sorted(parsed.hosts) == ["127.0.0.1", "c-c.connectors-pypi-demo.svc"]
    login = "connectors-pypi-demo-pypi-connector"
    assert parsed.authenticators("127.0.0.1") == (login, "", TOKEN)
    assert files[".netrc"].count("machine ") == 2


@pytest.mark.parametrize(
    "pairs",
    [
        [("connectors-pypi-demo", "x"), ("connectors-pypi-demo", "index")],
        [("team-a", "pypi"), ("team-b", "pypi")],
        [("team-a", "main"), ("team-a", "pypi"), ("team-b", "pypi")],
        [("team-a", "x"), ("team-a", "x-index"), ("team-b", "x")],
    ],
)
def test_every_file_parses_whatever_the_connectors_of_a_mount_are_called(
    pairs: list[tuple[str, str]],
):
    first = seed_connector()
    members = [
        dataclasses.replace(
            first, metadata=dataclasses.replace(first.metadata, namespace=ns, name=name)
        )
        for ns, name in pairs
    ]
    contexts = [render.RenderContext(f"http://c-{n}.{ns}.svc", TOKEN) for ns, n in pairs]
    for configuration in [c.name for c in pypi().spec.configurations]:
        files = render.render_configuration(
            members[0],
            pypi(),
            configuration,
            contexts[0],
            others=list(zip(members[1:], contexts[1:], strict=True)),
        )
        for filename, text in files.items():
            if filename.endswith(".toml"):
                tomllib.loads(text)  # raises on a table declared twice
            elif filename in ("pip.conf", ".pypirc"):
                configparser.ConfigParser().read_string(text)  # raises on a repeated section
        if configuration == "pypirc":
            parsed = configparser.ConfigParser()
            parsed.read_string(files[".pypirc"])
            assert len(parsed["distutils"]["index-servers"].split()) == len(pairs)
