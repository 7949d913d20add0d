"""The connector classes that ship with connectors, kept as data beside this module."""

from __future__ import annotations

import functools
from importlib import resources

from connectors.api import manifests
from connectors.api.resources import ConnectorClass

_FILES = ("pypi.yaml",)


@functools.cache
def builtin_classes() -> tuple[ConnectorClass, ...]:
    """Every built-in ConnectorClass, parsed once."""
    found: list[ConnectorClass] = []
    for name in _FILES:
        text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
        for resource in manifests.parse_text(text, source=f"built-in {name}"):
            if isinstance(resource, ConnectorClass):
                found.append(resource)
    return tuple(found)


def builtin_manifest(name: str) -> str:
    """The YAML text of a built-in class, for installing it into a cluster."""
    return resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
