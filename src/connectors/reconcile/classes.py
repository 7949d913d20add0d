"""A ConnectorClass's own Ready condition: whether this project can serve what it asks
for. Pure functions, no I/O.

Alauda's schema allows features this project does not implement; a class using one is
accepted by the API server (so manifests written from Alauda's documentation apply) and
reads Ready False with the reason, when it is applied rather than when a Pod first mounts
its files. A template that does not compile (Go `text/template` syntax, for one: this
project renders Jinja2) is `InvalidTemplate`; anything else unsupported is
`UnsupportedFeature`, every such field named in the message.
"""

from __future__ import annotations

from connectors.api.conditions import Condition, ConditionType, Reason, Status
from connectors.api.errors import TemplateError
from connectors.api.resources import ConnectorClass, HTTPProbe
from connectors.rendering import render


def unsupported_features(cls: ConnectorClass) -> list[str]:
    """Each field of `cls` that asks for something not built here, by its path."""
    spec = cls.spec
    found = [
        f"spec.auth.types[{t.name}].generator (Rego)"
        for t in spec.auth.types
        if t.generator and t.generator.rego
    ]
    for where, probe in _probes(cls):
        if probe is None:
            continue
        if probe.host:
            found.append(f"{where}.host (probes ask the connector's address)")
        if probe.scheme:
            found.append(f"{where}.scheme (probes use the connector's address's scheme)")
        if probe.response and probe.response.cel:
            found.append(f"{where}.response.cel (success is any answer but 404 or 5xx)")
    if spec.proxy and spec.proxy.auth_extractor and spec.proxy.auth_extractor.rego:
        found.append("spec.proxy.authExtractor (Rego)")
    if spec.api and (spec.api.ref or spec.api.uri):
        found.append("spec.api (ConnectorClass API services)")
    return found


def template_problems(cls: ConnectorClass) -> list[str]:
    """Each template (configuration file or probe path) that does not compile, and why."""
    templates = [
        (f"{configuration.name}/{filename}", template)
        for configuration in cls.spec.configurations
        for filename, template in configuration.data.items()
    ]
    templates += [(where, probe.path) for where, probe in _probes(cls) if probe is not None]
    problems = []
    for what, template in templates:
        try:
            render.compile_template(template, what=what)
        except TemplateError as exc:
            problems.append(str(exc))
    return problems


def _probes(cls: ConnectorClass) -> list[tuple[str, HTTPProbe | None]]:
    spec = cls.spec
    return [
        ("spec.livenessProbe.http", spec.liveness_probe.http if spec.liveness_probe else None),
        *((f"spec.authProbes[{p.auth_name}].probe.http", p.probe.http) for p in spec.auth_probes),
    ]


def ready_condition(cls: ConnectorClass) -> Condition:
    invalid = template_problems(cls)
    if invalid:
        return _false(
            Reason.INVALID_TEMPLATE,
            "templates are Jinja2 here (Alauda's Go templates do not compile): "
            + "; ".join(invalid),
        )
    unsupported = unsupported_features(cls)
    if unsupported:
        return _false(
            Reason.UNSUPPORTED_FEATURE, "not supported by this project: " + "; ".join(unsupported)
        )
    return Condition(type=ConditionType.READY, status=Status.TRUE, reason="", message="")


def _false(reason: Reason, message: str) -> Condition:
    return Condition(
        type=ConditionType.READY, status=Status.FALSE, reason=reason, message=message,
        severity="Error",
    )  # fmt: skip
