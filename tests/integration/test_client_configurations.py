"""Every common client, configured by nothing but the files `connectors render` writes, with
two connectors in use at once (pypiserver and devpi, both behind the one standalone proxy
at 127.0.0.1, so a `.netrc` cannot tell them apart by host)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.conftest import require
from tests.support import clients
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.wheels import make_wheel

NS = "clients"
PYPISERVER, DEVPI = "pypiserver", "devpi"


@pytest.fixture(scope="module")
def both(
    standalone: Standalone, pypi_registry: LocalRegistry, devpi_registry: LocalRegistry
) -> Standalone:
    standalone.write(
        NS,
        "registries.yaml",
        secret_manifest("pypiserver-secret", pypi_registry.username, pypi_registry.password),
        secret_manifest("devpi-secret", devpi_registry.username, devpi_registry.password),
        connector_manifest(PYPISERVER, pypi_registry.url, secret="pypiserver-secret"),
        connector_manifest(
            DEVPI, devpi_registry.url, secret="devpi-secret", params={"simplePath": "+simple"}
        ),
    )
    standalone.wait_ready(NS, PYPISERVER)
    standalone.wait_ready(NS, DEVPI)
    return standalone


@pytest.fixture(scope="module")
def published(both: Standalone, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One project in each registry, uploaded with twine and the two-connector `.pypirc`;
    returns connector name -> project name."""
    work = tmp_path_factory.mktemp("published")
    both.render(NS, PYPISERVER, "pypirc", into=work, also=(DEVPI,))
    projects = {PYPISERVER: "only-in-pypiserver", DEVPI: "only-in-devpi"}
    for connector, project in projects.items():
        wheel = make_wheel(work / connector, project, "1.0", payload=project.encode())
        repository = "connectors-pypi" if connector == PYPISERVER else f"connectors-pypi-{DEVPI}"
        upload = clients.run([
            sys.executable, "-m", "twine", "upload", "--non-interactive",
            "--disable-progress-bar", "--config-file", str(work / ".pypirc"),
            "--repository", repository, str(wheel),
        ])  # fmt: skip
        assert upload.returncode == 0, clients.explain(upload)
    return projects


def test_one_netrc_serves_two_connectors_on_one_host(
    both: Standalone, published: dict[str, str], tmp_path: Path
):
    files = both.render(NS, PYPISERVER, "netrc", into=tmp_path, also=(DEVPI,))
    assert files[".netrc"].count("machine 127.0.0.1") == 1  # one host, so one entry
    for connector, project in published.items():
        index = f"{both.connector_url(NS, connector)}/simple/"  # no credentials in the URL
        pip = clients.run(
            [
                sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
                "--disable-pip-version-check", "--index-url", index,
                "--target", str(tmp_path / f"pip-{connector}"), f"{project}==1.0",
            ],
            env={"NETRC": str(tmp_path / ".netrc"), "PIP_CONFIG_FILE": "/dev/null"},
        )  # fmt: skip
        assert pip.returncode == 0, clients.explain(pip)
        uv = clients.run(
            [
                str(clients.BIN / "uv"), "pip", "install", "--no-config", "--no-cache",
                "--no-deps", "--python", sys.executable, "--index-url", index,
                "--target", str(tmp_path / f"uv-{connector}"), f"{project}==1.0",
            ],
            env={"NETRC": str(tmp_path / ".netrc")},
        )  # fmt: skip
        assert uv.returncode == 0, clients.explain(uv)


def tool(name: str) -> str:
    path = clients.TOOLS / name
    require(path.exists(), f"{name} is not installed (scripts/install-clients)")
    return str(path)


def isolated(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A home of its own (no user configuration), plus the one setting that points the
    tool at its rendered file."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **settings}


def project(directory: Path, name: str, *, dist: bool) -> Path:
    """A project directory with its pyproject.toml and, when `dist`, a built wheel."""
    directory.mkdir(parents=True)
    (directory / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "1.0"\nrequires-python = ">=3.8"\n'
        "dependencies = []\n"
    )
    if dist:
        make_wheel(directory / "dist", name, "1.0", payload=name.encode())
    return directory


def run_in(directory: Path, argv: list[str], env: dict[str, str]) -> None:
    result = clients.run(["sh", "-c", f'cd "{directory}" && exec "$@"', "sh", *argv], env=env)
    assert result.returncode == 0, clients.explain(result)


@pytest.mark.parametrize("connector", [PYPISERVER, DEVPI])
def test_poetry_publishes_and_installs_with_only_the_rendered_config(
    both: Standalone, connector: str, tmp_path: Path
):
    poetry = tool("poetry")
    both.render(NS, connector, "poetry", into=tmp_path / "poetry")
    env = isolated(
        tmp_path,
        POETRY_CONFIG_DIR=str(tmp_path / "poetry"),
        POETRY_CACHE_DIR=str(tmp_path / "cache"),
        POETRY_VIRTUALENVS_IN_PROJECT="true",
    )
    name = f"poetry-made-{connector}"
    made = project(tmp_path / "made", name, dist=True)
    run_in(made, [poetry, "publish", "-r", "connectors-pypi", "-n"], env)

    # The project names its own source, as poetry documents: the rendered file carries the
    # credentials for it whatever the source is called.
    user = project(tmp_path / "user", "user-of-poetry", dist=False)
    with (user / "pyproject.toml").open("a") as pyproject:
        pyproject.write(
            "[tool.poetry]\npackage-mode = false\n[[tool.poetry.source]]\n"
            f'name = "corp"\nurl = "{both.connector_url(NS, connector)}/simple/"\n'
            'priority = "primary"\n'
        )
    run_in(user, [poetry, "add", "-n", f"{name}==1.0"], env)
    module = name.replace("-", "_")
    run_in(user, [poetry, "run", "python", "-c", f"import {module}"], env)


@pytest.mark.parametrize("connector", [PYPISERVER, DEVPI])
def test_pdm_publishes_and_installs_with_only_the_rendered_config(
    both: Standalone, connector: str, tmp_path: Path
):
    pdm = tool("pdm")
    both.render(NS, connector, "pdm", into=tmp_path)
    env = isolated(tmp_path, PDM_CONFIG_FILE=str(tmp_path / "pdm.toml"))
    name = f"pdm-made-{connector}"
    made = project(tmp_path / "made", name, dist=True)
    run_in(made, [pdm, "publish", "--no-build", "-r", "connectors-pypi"], env)

    user = project(tmp_path / "user", "user-of-pdm", dist=False)
    with (user / "pyproject.toml").open("a") as pyproject:
        pyproject.write("[tool.pdm]\ndistribution = false\n")
    run_in(user, [pdm, "add", f"{name}==1.0"], env)
    module = name.replace("-", "_")
    run_in(user, [pdm, "run", "python", "-c", f"import {module}"], env)


@pytest.mark.parametrize("connector", [PYPISERVER, DEVPI])
def test_hatch_publishes_and_its_environments_install_with_only_the_rendered_files(
    both: Standalone, connector: str, tmp_path: Path
):
    hatch = tool("hatch")
    both.render(NS, connector, "hatch", "pipconf", into=tmp_path)
    env = isolated(
        tmp_path,
        HATCH_CONFIG=str(tmp_path / "hatch.toml"),
        PIP_CONFIG_FILE=str(tmp_path / "pip.conf"),
    )
    name = f"hatch-made-{connector}"
    made = project(tmp_path / "made", name, dist=True)
    run_in(made, [hatch, "publish", "-n"], env)

    user = project(tmp_path / "user", "user-of-hatch", dist=False)
    with (user / "pyproject.toml").open("a") as pyproject:
        pyproject.write(
            f'[tool.hatch.envs.default]\nskip-install = true\ndependencies = ["{name}==1.0"]\n'
        )
    module = name.replace("-", "_")
    run_in(user, [hatch, "run", "python", "-c", f"import {module}"], env)


@pytest.mark.parametrize("connector", [PYPISERVER, DEVPI])
def test_uv_publishes_and_installs_with_only_the_rendered_uv_toml(
    both: Standalone, connector: str, tmp_path: Path
):
    both.render(NS, connector, "uvtoml", into=tmp_path)
    env = isolated(tmp_path, UV_CONFIG_FILE=str(tmp_path / "uv.toml"))
    name = f"uv-made-{connector}"
    made = project(tmp_path / "made", name, dist=True)
    uv = str(clients.BIN / "uv")
    run_in(made, [uv, "publish", "--index", "connectors-pypi", "--no-cache"], env)
    install = clients.run(
        [
            uv, "pip", "install", "--no-cache", "--python", sys.executable,
            "--target", str(tmp_path / "site"), f"{name}==1.0",
        ],
        env=env,
    )  # fmt: skip
    assert install.returncode == 0, clients.explain(install)
    assert (tmp_path / "site" / name.replace("-", "_") / "payload.bin").read_bytes() == (
        name.encode()
    )
