"""A ConnectorClass says, in its own Ready condition, whether this project can serve it:
Alauda's schema allows features not built here, and Go templates do not compile here."""

from __future__ import annotations

from typing import Any

from connectors.api import manifests
from connectors.api.resources import ConnectorClass
from connectors.classes.builtin import builtin_classes
from connectors.reconcile import classes


def alauda_class(**spec: Any) -> ConnectorClass:
    document = {
        "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "ConnectorClass",
        "metadata": {"name": "from-the-docs"},
        "spec": {"address": {"name": "address", "type": "string"}, **spec},
    }  # fmt: skip
    parsed = manifests.parse(document)
    assert isinstance(parsed, ConnectorClass)
    return parsed


def test_the_builtin_pypi_class_is_ready():
    pypi = next(c for c in builtin_classes() if c.name == "pypi")
    ready = classes.ready_condition(pypi)
    assert (ready.status, ready.reason) == ("True", "")


def test_accepted_fields_that_change_nothing_leave_a_class_ready():
    cls = alauda_class(
        addressExtensions=[{"name": "files", "type": "string"}],
        proxy={"ref": {"kind": "Service", "name": "connectors-proxy-service"}, "uri": "/"},
        livenessProbe={"http": {"path": "/simple/", "disableRedirect": True}},
        authProbes=[{"authName": "basicAuth", "params": [{"name": "repository"}],
                     "probe": {"http": {"path": "/simple/", "method": "GET"}}}],
        configurations=[{"name": "pipconf", "annotations": {"a": "b"},
                         "data": {"pip.conf": "[global]\nindex-url = {{ proxy.url }}\n"}}],
    )  # fmt: skip
    assert classes.ready_condition(cls).is_true


def test_each_unsupported_feature_is_named_in_the_reason():
    cls = alauda_class(
        auth={"types": [{"name": "token", "generator": {"rego": "package proxy"}}]},
        livenessProbe={"http": {"path": "/", "host": "other.example", "scheme": "https",
                                "response": {"cel": "response.statusCode == 200"}}},
        proxy={"authExtractor": {"rego": "package proxy"}},
    )  # fmt: skip
    ready = classes.ready_condition(cls)
    assert (ready.status, ready.reason) == ("False", "UnsupportedFeature")
    for field in (
        "spec.auth.types[token].generator (Rego)",
        "spec.livenessProbe.http.host",
        "spec.livenessProbe.http.scheme",
        "spec.livenessProbe.http.response.cel",
        "spec.proxy.authExtractor (Rego)",
    ):
        assert field in ready.message


def test_a_go_template_is_an_invalid_template_naming_the_file():
    go_template = "[url]\n  insteadOf = {{ .connector.spec.address }}\n"
    cls = alauda_class(
        configurations=[{"name": "gitconfig", "data": {".gitconfig": go_template}}]
    )  # fmt: skip
    ready = classes.ready_condition(cls)
    assert (ready.status, ready.reason) == ("False", "InvalidTemplate")
    assert "gitconfig/.gitconfig" in ready.message
    probing = alauda_class(livenessProbe={"http": {"path": "/{{ .Connector.Spec.Address }}"}})
    assert "spec.livenessProbe.http" in classes.ready_condition(probing).message
