"""The connector classes that ship with connectors, kept as data beside this module."""

from __future__ import annotations

import functools
from importlib import resources

from connectors.api import manifests
from connectors.api.resources import ConnectorClass

NAMES = ("pypi",)  # each is <name>.yaml beside this module


@functools.cache
def builtin_classes() -> tuple[ConnectorClass, ...]:
    """Every built-in ConnectorClass, parsed once."""
    found: list[ConnectorClass] = []
    for name in NAMES:
        for resource in manifests.parse_text(builtin_manifest(name), source=f"built-in {name}"):
            if isinstance(resource, ConnectorClass):
                found.append(resource)
    return tuple(found)


def builtin_manifest(name: str) -> str:
    """The YAML text of a built-in class, for installing it into a cluster."""
    return resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
