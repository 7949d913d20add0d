"""Conditions that name the cause, each with a real registry misconfigured the way a user
would do it: devpi without its `+simple` path, a wrong password where reading needs none
(devpi, pypiserver with `-a update`), and pypiserver's default fallback to PyPI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.support import clients, leaks, wire
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.waiting import settled
from tests.support.wheels import make_wheel

NS = "diagnoses"


@pytest.fixture(scope="module")
def anonymous_reads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """pypiserver that asks a password for uploads only."""
    with localregistry.pypiserver(
        tmp_path_factory.mktemp("anonymous"), authenticate="update"
    ) as registry:
        yield registry


# A mirror's password in the fallback URL must reach no status, page or log line.
MIRROR_PASSWORD = "mirror-password-in-the-fallback-url"


@pytest.fixture(scope="module")
def falls_back(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """pypiserver falling back, as it does by default, to another index for names it lacks."""
    leaks.PASSWORDS.add(MIRROR_PASSWORD)
    fallback = f"https://mirror:{MIRROR_PASSWORD}@pypi.org/simple/"
    with localregistry.pypiserver(
        tmp_path_factory.mktemp("fallback"), fallback=fallback
    ) as registry:
        yield registry


def condition(server: Standalone, name: str, type_: str) -> dict[str, Any]:
    row = server.status_row(NS, name)
    assert row is not None
    return next(c for c in row["status"]["conditions"] if c["type"] == type_)


def connect(server: Standalone, name: str, registry: LocalRegistry, password: str, **kw: Any):
    server.write(
        NS,
        f"{name}.yaml",
        secret_manifest(f"{name}-secret", registry.username, password),
        connector_manifest(name, registry.url, secret=f"{name}-secret", **kw),
    )


def test_devpi_without_its_simple_path_is_connection_failed_with_the_hint(
    standalone: Standalone, devpi_registry: LocalRegistry
):
    connect(standalone, "nopath", devpi_registry, devpi_registry.password)
    ready = standalone.wait_ready(NS, "nopath", status="False", reason="ConnectionFailed")
    assert "there is no package index at this path" in ready["message"]
    assert "simplePath" in ready["message"] and "devpi: +simple" in ready["message"]


@pytest.mark.parametrize("registry", ["devpi", "pypiserver"])
def test_a_wrong_password_where_reading_needs_none_is_found_by_an_empty_upload(
    standalone: Standalone,
    devpi_registry: LocalRegistry,
    anonymous_reads: LocalRegistry,
    registry: str,
    tmp_path: Path,
):
    target = devpi_registry if registry == "devpi" else anonymous_reads
    params = {"simplePath": "+simple"} if registry == "devpi" else None
    name = f"wrong-{registry}"
    connect(standalone, name, target, "not-the-password", params=params)
    if registry == "pypiserver":
        # pypiserver answers a wrong password with 403, as devpi answers a user who may
        # not upload: the connector still installs, so it stays Ready, and says why.
        standalone.wait_ready(NS, name)
        auth = condition(standalone, name, "AuthReady")
        assert (auth["status"], auth["reason"]) == ("Unknown", "AnonymousRead")
        assert "HTTP 403" in auth["message"] and "the password is wrong" in auth["message"]
    else:
        ready = standalone.wait_ready(NS, name, status="False", reason="AuthenticationFailed")
        assert (
            "answers without credentials, so they were checked with an empty upload"
            in (ready["message"])
        )
        assert "(HTTP 401): fix the username or password in the Secret" in ready["message"]
        # An upload through the proxy fails, and the 502 names the condition that says why.
        wheel = make_wheel(tmp_path / "dist", "refused-upload", "1.0", payload=b"x")
        standalone.render(NS, name, "pypirc", into=tmp_path)
        upload = clients.twine_upload(tmp_path / ".pypirc", wheel)
        assert upload.returncode != 0
        assert "Bad Gateway" in upload.stdout
        # twine shows no body; the proxy's says where to look.
        reply = wire.request(
            "POST",
            standalone.connector_url(NS, name) + "/",
            headers={
                **wire.basic(standalone.token(NS, name)),
                "Content-Type": "application/x-www-form-urlencoded",
            },
            body=b":action=file_upload",
        )
        assert reply.status == 502 and b"its AuthReady condition says more" in reply.body
        auth = condition(standalone, name, "AuthReady")
        assert auth["reason"] == "AuthenticationFailed" and "empty upload" in auth["message"]

    connect(standalone, name, target, target.password, params=params)
    auth = settled(
        lambda: (c := condition(standalone, name, "AuthReady"))["status"] == "True" and c,
        30,
        "AuthReady True once the password is right",
    )
    assert "accepted them" in auth["message"]


def test_a_registry_that_redirects_names_it_lacks_off_host_is_reported(
    standalone: Standalone, falls_back: LocalRegistry
):
    connect(standalone, "fallback", falls_back, falls_back.password)
    standalone.wait_ready(NS, "fallback")
    links = condition(standalone, "fallback", "LinksCovered")
    assert (links["status"], links["reason"]) == ("False", "OffHostRedirect")
    assert "redirects to https://pypi.org" in links["message"]
    assert "--disable-fallback" in links["message"]

    # A client asking for a name the registry lacks is sent to PyPI: the audit line says so.
    token = standalone.token(NS, "fallback")
    url = f"{standalone.connector_url(NS, 'fallback')}/simple/not-in-the-registry/"
    reply = wire.request("GET", url, headers=wire.basic(token))
    assert reply.status in (301, 302, 303, 307, 308)
    # ...without the mirror's password, which is the registry's to keep.
    assert reply.header("Location") == "https://pypi.org/simple/not-in-the-registry/"
    lines = settled(
        lambda: (
            [x for x in standalone.audit_lines() if x["path"].endswith("/not-in-the-registry/")]
            or None
        ),
        10,
        "the redirected request's audit line",
    )
    assert lines and lines[-1]["redirect"] == "https://pypi.org"
    assert MIRROR_PASSWORD not in links["message"] + json.dumps(lines)


def audit_line(server: Standalone, request_id: str) -> dict[str, Any]:
    """The audit line of a request (written as its answer ends, so maybe a moment later)."""
    return settled(
        lambda: next((x for x in server.audit_lines() if x["request"] == request_id), None),
        10,
        f"an audit line for request {request_id}",
    )


def test_every_5xx_names_the_line_and_the_condition_that_explain_it(standalone: Standalone):
    down = f"http://127.0.0.1:{localregistry.free_port()}"  # nothing listens there
    standalone.write(NS, "down.yaml", connector_manifest("down", down, secret=None))
    standalone.write(NS, "lost.yaml", connector_manifest("lost", down, secret="never-made"))
    standalone.wait_ready(NS, "down", status="False", reason="ConnectionFailed")
    standalone.wait_ready(NS, "lost", status="False", reason="SecretNotFound")
    for name, status, explained_by in [("down", 502, "LivenessReady"), ("lost", 503, "Ready")]:
        url = f"{standalone.connector_url(NS, name)}/simple/"
        reply = wire.request("GET", url, headers=wire.basic(standalone.token(NS, name)))
        assert reply.status == status
        explanation, last = reply.body.decode().rstrip("\n").split("\n")
        assert f"its {explained_by} condition says" in explanation
        request_id = last.removeprefix("request ")
        assert audit_line(standalone, request_id)["error"] == explanation
        # ...and that condition does explain it.
        named = condition(standalone, name, explained_by)
        assert named["status"] == "False"
        assert ("cannot reach" if name == "down" else "Secret never-made not found") in (
            named["message"]
        )
