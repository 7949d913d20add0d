"""Render a class's configuration templates into client files: pure functions.

Templates come from ConnectorClass resources, which a cluster user may write, so they run
in Jinja2's immutable sandbox with no loader: a template sees only the variables given
here, cannot reach files, the environment or Python internals, and cannot change state.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import jinja2
from jinja2 import sandbox

from connectors.api import codec
from connectors.api.errors import NotFoundError, TemplateError
from connectors.api.resources import Configuration, Connector, ConnectorClass

_ENVIRONMENT = sandbox.ImmutableSandboxedEnvironment(
    # An empty loader: `{% include %}` and `{% import %}` find nothing rather than a file.
    loader=jinja2.DictLoader({}),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


@dataclasses.dataclass(frozen=True)
class RenderContext:
    """What a file is rendered for: the proxy it points at and the token it carries."""

    proxy_url: str
    token: str

    def __repr__(self) -> str:
        return f"RenderContext(proxy_url={self.proxy_url!r}, token=<hidden>)"


def username_for(connector: Connector) -> str:
    """The display name clients send with the token (as the seed shows: namespace-name)."""
    return f"{connector.namespace}-{connector.name}"


def effective_params(
    connector: Connector, cls: ConnectorClass, configuration: Configuration | None = None
) -> dict[str, str]:
    """Class and configuration defaults, overlaid with the Connector's spec.params."""
    params: dict[str, str] = {}
    specs = cls.spec.params + (configuration.params if configuration else ())
    for spec in specs:
        if spec.default is not None:
            params[spec.name] = spec.default
    for given in connector.spec.params:
        params[given.name] = given.value
    return params


def proxy_variables(proxy_url: str) -> dict[str, str]:
    parts = urlsplit(proxy_url)
    return {
        "url": proxy_url.rstrip("/"),
        "scheme": parts.scheme,
        "host": parts.netloc,
        "hostname": parts.hostname or "",
        "path": parts.path.rstrip("/"),
    }


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> jinja2.Template:
    # Compiling costs milliseconds and every reconcile pass renders the same few class
    # templates; a failed compile raises, and exceptions are never cached.
    return _ENVIRONMENT.from_string(template)


def compile_template(template: str, *, what: str) -> None:
    """Raise TemplateError naming `what` if `template` does not compile."""
    try:
        _compiled(template)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{what}: {exc.__class__.__name__}: {exc.message}") from None


def render_string(template: str, variables: dict[str, Any], *, what: str) -> str:
    """Render one template string in the sandbox; failures name `what`, not the values."""
    try:
        return _compiled(template).render(variables)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{what}: {exc.__class__.__name__}: {exc.message}") from None
    except Exception as exc:
        # A template can fail in plain Python too (`{{ 1/0 }}`); its message could quote a
        # value, so only the kind of failure is reported.
        raise TemplateError(f"{what}: {exc.__class__.__name__} while rendering") from None


def render_configuration(
    connector: Connector,
    cls: ConnectorClass,
    name: str,
    context: RenderContext,
    *,
    overrides: Mapping[str, str] | None = None,
    others: Sequence[tuple[Connector, RenderContext]] = (),
) -> dict[str, str]:
    """The files of configuration `name` (filename -> content) for this connector, and for
    `others` of the same class mounted with it: the templates see every one of them, this
    connector first, as `connectors`. `overrides` (a mount's `configuration.params`) take
    precedence over every other parameter value."""
    configuration = cls.spec.configuration(name)
    if configuration is None:
        known = ", ".join(c.name for c in cls.spec.configurations) or "none"
        raise NotFoundError(
            f"ConnectorClass {cls.name} has no configuration {name!r} (it has: {known})"
        )
    members = [(connector, context), *others]
    keys = _keys([member for member, _ in members])
    every = [
        {**_connector_variables(member, cls, configuration, member_context, overrides), "key": key}
        for (member, member_context), key in zip(members, keys, strict=True)
    ]
    variables = {
        **every[0],
        "connectorclass": {"metadata": codec.encode(cls.metadata), "spec": codec.encode(cls.spec)},
        "connectors": every,
    }
    return {
        filename: render_string(template, variables, what=f"configuration {name}, file {filename}")
        for filename, template in configuration.data.items()
    }


def _keys(members: Sequence[Connector]) -> list[str]:
    """A name for each connector that no other of the set shares, for templates to name
    their sections with: its name, or `<namespace>.<name>` when another namespace has a
    connector of that name (a namespace holds no dot, so the two forms never meet)."""
    names = [member.name for member in members]
    return [
        member.name if names.count(member.name) == 1 else f"{member.namespace}.{member.name}"
        for member in members
    ]


def _connector_variables(
    connector: Connector,
    cls: ConnectorClass,
    configuration: Configuration,
    context: RenderContext,
    overrides: Mapping[str, str] | None,
) -> dict[str, Any]:
    return {
        "connector": {
            "metadata": codec.encode(connector.metadata),
            "spec": codec.encode(connector.spec),
        },
        "context": {"token": context.token, "username": username_for(connector)},
        "proxy": proxy_variables(context.proxy_url),
        "params": {**effective_params(connector, cls, configuration), **(overrides or {})},
    }
