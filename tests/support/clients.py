"""Real pip, twine and uv, run as a workload would: with nothing but the rendered files.

The machine's own PIP_*/UV_*/TWINE_* settings are removed first (this machine sets
PIP_FIND_LINKS, which would let pip find packages without the proxy).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from connectors.standalone.demo import client_environment
from tests.support import leaks

BIN = Path(sys.executable).parent
# poetry, pdm and hatch, each in its own virtualenv (scripts/install-clients).
TOOLS = Path(os.environ.get("CONNECTORS_CLIENTS", "/nonexistent")) / "bin"


def run(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        env={**client_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    leaks.record(f"output of {' '.join(argv[1:4])}", result.stdout + result.stderr)
    return result


def pip_install(
    pip_conf: Path, *requirements: str, target: Path
) -> subprocess.CompletedProcess[str]:
    return run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--target",
            str(target),
            *requirements,
        ],
        env={"PIP_CONFIG_FILE": str(pip_conf)},
    )


def twine_upload(pypirc: Path, *dists: Path) -> subprocess.CompletedProcess[str]:
    return run(
        [
            sys.executable,
            "-m",
            "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--config-file",
            str(pypirc),
            "--repository",
            "connectors-pypi",
            *map(str, dists),
        ]
    )


def uv_pip_install(
    uv_toml: Path, *requirements: str, target: Path
) -> subprocess.CompletedProcess[str]:
    return run(
        [
            str(BIN / "uv"),
            "pip",
            "install",
            "--config-file",
            str(uv_toml),
            "--no-cache",
            "--no-deps",
            "--python",
            sys.executable,
            "--target",
            str(target),
            *requirements,
        ]
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
