"""The seed quick start's manifests, as its reader copies them (indentation restored)."""

from __future__ import annotations

from connectors.standalone import demo
from tests.support import leaks

NAMESPACE = demo.NAMESPACE
CONNECTOR = demo.CONNECTOR
SEED_ADDRESS = "https://nexus.example.com/repository/pypi"


def step_2(
    address: str = SEED_ADDRESS,
    username: str = "your-registry-username",
    password: str = "your-registry-password",
) -> str:
    """Step 2's Secret and Connector, verbatim but for what a test points at a registry."""
    leaks.PASSWORDS.add(password)
    leaks.USERNAMES.add(username)
    return demo.SEED_MANIFEST.format(address=address, username=username, password=password)
