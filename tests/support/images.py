"""Container images for the test node, made on this machine: no registry is reachable.

Each image is a `docker save` archive (written here with the standard library) that
containerd imports:
- `pause` (the Pod sandbox), `csi-registrar` and `coredns`: one static binary each, from
  scripts/build-testbin;
- `python:3-bookworm`, the name the seed's Jobs use: a Debian bookworm root filesystem made
  by mmdebstrap (cached, keyed by its package list) plus a layer that deletes Debian's
  EXTERNALLY-MANAGED marker, so `pip install` writes where it does in the official image,
  and holds /opt/wheels, the tools the seed's upload Job installs (build, twine, setuptools)
  for Pods that cannot reach PyPI;
- the project's image, built by following the Dockerfile's own instructions (see
  `dockerfile_recipe`) with only its base image substituted by the one above: the build
  stage's `pip wheel` runs on the host (whose pip trusts this machine's TLS), the final
  stage's RUN runs in a chroot of the base.

Differences from the official python:3-bookworm: Debian's python3 (3.11) in /usr rather
than a Python built into /usr/local, and no git or compilers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parents[2]
CACHE = Path(os.environ.get("CONNECTORS_IMAGE_CACHE", Path.home() / ".cache/connectors/images"))
SUITE = "bookworm"
# What the seed's Jobs need of python:3-bookworm: pip, `python`, venv for `python -m build`.
PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates")
# The seed's upload Job installs these; the image carries them as wheels.
UPLOAD_TOOLS = ("pip", "build", "twine", "setuptools", "wheel")
WHEELS_DIR = "/opt/wheels"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PAUSE = "registry.k8s.io/pause:3.10"
REGISTRAR = "connectors.local/csi-registrar:test"
COREDNS = "connectors.local/coredns:test"
PYTHON = "docker.io/library/python:3-bookworm"
PROJECT_REPOSITORY = "connectors.local/connectors"


@dataclass(frozen=True)
class Config:
    """What an image's config says about running it."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    env: list[str] = field(default_factory=lambda: [f"PATH={PATH}", "LANG=C.UTF-8"])


# --- archives -------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_archive(out: Path, ref: str, layers: list[Path], config: Config) -> Path:
    """A `docker save` archive of uncompressed layer tars, as `ctr images import` reads."""
    diff_ids = [f"sha256:{_sha256(layer)}" for layer in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": config.env,
            "Entrypoint": config.entrypoint or None,
            "Cmd": config.cmd or None,
            "User": config.user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "tests/support/images.py"} for _ in layers],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": layer_names}]
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as archive:
        _add_bytes(archive, config_name, config_bytes)
        for name, layer in zip(layer_names, layers, strict=True):
            archive.add(layer, arcname=name)
        _add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
    tmp.replace(out)
    return out


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    archive.addfile(info, io.BytesIO(data))


def binary_layer(binary: Path, out: Path) -> Path:
    """A layer holding one static binary at the root."""
    with tarfile.open(out, "w") as layer:
        info = layer.gettarinfo(str(binary), arcname=binary.name)
        info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "root", "root"
        with binary.open("rb") as f:
            layer.addfile(info, f)
    return out


def binary_image(binaries: Path, name: str, ref: str, out_dir: Path, *args: str) -> Path:
    layer = binary_layer(binaries / name, out_dir / f"{name}-layer.tar")
    return write_archive(
        out_dir / f"{name}.tar", ref, [layer], Config(entrypoint=[f"/{name}", *args])
    )


# --- python:3-bookworm ----------------------------------------------------------------------


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def rootfs() -> Path:
    """The Debian root filesystem as one tar, made once per package list."""
    out = CACHE / f"rootfs-{SUITE}-{_key(SUITE, *PACKAGES)}.tar"
    if out.is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial.tar")
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}",
         SUITE, str(tmp)],
        check=True, timeout=600,
    )  # fmt: skip
    tmp.replace(out)
    return out


def upload_tools(out: Path) -> Path:
    """Wheels of the upload tools for the image's Python (3.11), fetched on the host."""
    if out.is_dir() and any(out.glob("twine-*.whl")):
        return out
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(out),
         "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
         "--abi", "cp311", "--platform", "manylinux2014_x86_64", *UPLOAD_TOOLS],
        check=True, timeout=600,
    )  # fmt: skip
    return out


def python_layer(wheels: Path, out: Path) -> Path:
    """The layer on top of Debian's: the EXTERNALLY-MANAGED marker whited out, the wheels."""
    with tarfile.open(out, "w") as layer:
        _add_bytes(layer, "usr/lib/python3.11/.wh.EXTERNALLY-MANAGED", b"")
        for wheel in sorted(wheels.glob("*.whl")):
            layer.add(wheel, arcname=f"{WHEELS_DIR.lstrip('/')}/{wheel.name}")
    return out


def python_image(out_dir: Path) -> Path:
    base = rootfs()
    wheels = upload_tools(CACHE / f"upload-tools-{_key(*UPLOAD_TOOLS)}")
    layer = python_layer(wheels, out_dir / "python-layer.tar")
    return write_archive(out_dir / "python.tar", PYTHON, [base, layer], Config(cmd=["python3"]))


# --- the project's image, from the Dockerfile -----------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """The Dockerfile's two stages, as this module follows them."""

    build_copies: list[tuple[list[str], str]]  # (sources, destination) into the build dir
    build_run: str
    final_run: str
    config: Config


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = text.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile_recipe(text: str) -> Recipe:
    """Read the Dockerfile; any instruction this recipe does not follow is an error, so
    the image built here cannot drift from the one users build."""
    stages: list[list[tuple[str, str]]] = []
    for instruction, argument in _instructions(text):
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, argument))
    if len(stages) != 2:
        raise ValueError(f"expected a build stage and a final stage, found {len(stages)}")
    copies, build_run = _read_build_stage(stages[0])
    final_run, config = _read_final_stage(stages[1])
    return Recipe(copies, build_run, final_run, config)


def _read_build_stage(stage: list[tuple[str, str]]) -> tuple[list[tuple[list[str], str]], str]:
    copies: list[tuple[list[str], str]] = []
    run = ""
    for instruction, argument in stage[1:]:
        if instruction == "COPY":
            *sources, destination = shlex.split(argument)
            copies.append((sources, destination))
        elif instruction == "RUN":
            run = argument
        elif (instruction, argument) != ("WORKDIR", "/src"):
            raise ValueError(f"the build stage's {instruction} {argument} is not followed here")
    return copies, run


def _read_final_stage(stage: list[tuple[str, str]]) -> tuple[str, Config]:
    run = user = ""
    entrypoint: list[str] = []
    cmd: list[str] = []
    for instruction, argument in stage[1:]:
        if instruction == "RUN":
            run = argument
        elif instruction == "USER":
            user = argument
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(argument)
        elif instruction == "CMD":
            cmd = json.loads(argument)
        elif (instruction, argument) != ("COPY", "--from=build /wheels /wheels"):
            raise ValueError(f"the final stage's {instruction} {argument} is not followed here")
    return run, Config(entrypoint=entrypoint, cmd=cmd, user=user)


def project_key() -> str:
    """Changes whenever anything the image is built from changes."""
    digest = hashlib.sha256()
    files = [ROOT / "Dockerfile", ROOT / "pyproject.toml", ROOT / "README.md"]
    files += sorted(
        p for p in (ROOT / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    digest.update(rootfs().name.encode())
    return digest.hexdigest()[:16]


def project_ref() -> str:
    return f"{PROJECT_REPOSITORY}:{project_key()}"


def project_image(out_dir: Path) -> Path:
    """The project's image, cached by everything it is built from."""
    ref = project_ref()
    cached = CACHE / f"connectors-{ref.rsplit(':', 1)[1]}.tar"
    if cached.is_file():
        return cached
    recipe = dockerfile_recipe((ROOT / "Dockerfile").read_text())
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        work = Path(scratch)
        wheels = _build_stage(recipe, work)
        layer = _final_stage(recipe, wheels, work)
        write_archive(cached, ref, [layer], recipe.config)
    return cached


def _build_stage(recipe: Recipe, work: Path) -> Path:
    """The build stage on the host: its COPYs into a directory, then its RUN there, with
    /wheels moved under the work directory and `pip` the host's."""
    src = work / "src"
    src.mkdir()
    for sources, destination in recipe.build_copies:
        for source in sources:
            target = (
                src / destination / Path(source).name
                if destination.endswith("/")
                else src / destination
            )
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, target)
    wheels = work / "wheels"
    command = recipe.build_run.replace("/wheels", str(wheels))
    command = command.replace("pip ", f"{shlex.quote(sys.executable)} -m pip ", 1)
    subprocess.run(["sh", "-c", command], cwd=src, check=True, timeout=900)
    return wheels


def _final_stage(recipe: Recipe, wheels: Path, work: Path) -> Path:
    """The final stage in a chroot of the base image's files, taken whole as one layer."""
    tree = work / "rootfs"
    tree.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(rootfs()), "-C", str(tree)], check=True)
    (tree / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)  # the base's layer
    shutil.copytree(wheels, tree / "wheels")
    env = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root"}
    subprocess.run(
        ["chroot", str(tree), "sh", "-c", recipe.final_run], env=env, check=True, timeout=900
    )
    layer = work / "layer.tar"
    subprocess.run(["tar", "--numeric-owner", "-cf", str(layer), "-C", str(tree), "."], check=True)
    return layer
