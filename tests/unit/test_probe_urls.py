"""What a probe asks: the connector's address plus its rendered path, where an auth
probe's path also sees Alauda's `authProbes[].params`, filled from `spec.auth.params`."""

from __future__ import annotations

from typing import Any

from connectors.api import manifests
from connectors.api.resources import Connector, ConnectorClass
from connectors.reconcile import probes

CLASS = {
    "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "ConnectorClass",
    "metadata": {"name": "checks-a-repository"},
    "spec": {
        "address": {"name": "address"},
        "auth": {"types": [{"name": "basicAuth", "secretType": "kubernetes.io/basic-auth"}]},
        "authProbes": [{"authName": "basicAuth",
                        "params": [{"name": "repository", "default": "main"}],
                        "probe": {"http": {"path": "/repos/{{ params.repository }}/"}}}],
    },
}  # fmt: skip


def parsed(document: dict[str, Any]) -> Any:
    return manifests.parse(document)


def connector(**auth: Any) -> Connector:
    found = parsed({
        "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "Connector",
        "metadata": {"name": "c", "namespace": "n"},
        "spec": {"connectorClassName": "checks-a-repository", "address": "https://r.example/x",
                 "auth": {"name": "basicAuth", **auth}},
    })  # fmt: skip
    assert isinstance(found, Connector)
    return found


def test_an_auth_probe_path_sees_its_params_filled_from_the_connector():
    cls = parsed(CLASS)
    assert isinstance(cls, ConnectorClass)
    probe = cls.spec.auth_probes[0].probe.http
    assert probe is not None
    chosen = connector(params=[{"name": "repository", "value": "team-a"}])
    defaulted = connector()
    url = probes.probe_url(chosen, cls, probe, probes.auth_probe_params(chosen, cls, "basicAuth"))
    assert url == "https://r.example/x/repos/team-a/"
    params = probes.auth_probe_params(defaulted, cls, "basicAuth")
    assert probes.probe_url(defaulted, cls, probe, params) == "https://r.example/x/repos/main/"
