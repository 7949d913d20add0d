"""The CSI driver's own parts: committed stubs match the .proto, volume attributes parse
as documented, files live on a tmpfs of their own and are rewritten in place (the inode a
`subPath` mount pinned sees every new token) without a reader ever seeing a broken file."""

from __future__ import annotations

import filecmp
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.csi import files, memoryfs, volume

ROOT = Path(__file__).parents[2]
POD = {
    volume.POD_NAME: "job",
    volume.POD_NAMESPACE: "demo",
    volume.POD_UID: "1234",
    volume.SERVICE_ACCOUNT: "default",
}


def test_committed_stubs_are_what_the_proto_generates(tmp_path: Path):
    result = subprocess.run(
        [str(ROOT / "scripts" / "gen-csi-proto"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    generated = tmp_path / "connectors" / "csi" / "proto"
    committed = ROOT / "src" / "connectors" / "csi" / "proto"
    names = ["csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py", "csi_pb2_grpc.pyi"]
    _, mismatch, errors = filecmp.cmpfiles(generated, committed, names, shallow=False)
    assert (mismatch, errors) == ([], []), "run scripts/gen-csi-proto and commit the result"


def test_the_seeds_attributes_parse_with_the_defaults():
    parsed = volume.parse(
        {**POD, "connector.name": "pypi-connector", "configuration.names": "pipconf"}
    )
    assert parsed.connectors == (("demo", "pypi-connector"),)
    assert parsed.configurations == ("pipconf",)
    assert parsed.token_seconds is None  # whatever kubelet issues
    assert parsed.excluded_files == () and parsed.params == ()


def test_the_list_form_names_connectors_in_other_namespaces():
    parsed = volume.parse(
        {**POD, "connectors": "a, shared/b", "configuration.names": "pipconf,pypirc,pipconf",
         "token.expiration": "1h"}
    )  # fmt: skip
    assert parsed.connectors == (("demo", "a"), ("shared", "b"))
    assert parsed.configurations == ("pipconf", "pypirc")
    assert parsed.token_seconds == 3600


def test_alaudas_optional_forms_parse_as_documented():
    parsed = volume.parse(
        {**POD, "connectors": "a", "configuration.names": "pipconf, !context.token, pypirc",
         "configuration.params": '{"pipconf": {"timeout": 60, "strict": true}}',
         "token.expiration": "1h30m"}
    )  # fmt: skip
    assert parsed.configurations == ("pipconf", "pypirc")
    assert parsed.excluded_files == ("context.token",)
    assert parsed.params_for("pipconf") == {"timeout": "60", "strict": "true"}
    assert parsed.params_for("pypirc") == {}
    assert parsed.token_seconds == 5400
    built_in_only = volume.parse({**POD, "connector.name": "a"})
    assert built_in_only.configurations == () and built_in_only.excluded_files == ()


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"connector.name": "c", "configuration.names": "pipconf"}, "podInfoOnMount"),
        ({**POD, "configuration.names": "pipconf"}, "connector.name is required"),
        ({**POD, "connector.name": "c", "connectors": "d", "configuration.names": "x"}, "not both"),
        ({**POD, "connector.name": "c", "configuration.names": "x",
          "configuration.params": "{nope"}, "configuration.params is not JSON"),
        ({**POD, "connector.name": "c", "configuration.names": "x",
          "configuration.params": '{"y": {"a": "b"}}'}, "names y, not in configuration.names"),
        ({**POD, "connector.name": "c", "configuration.names": "x",
          "configuration.params": '{"x": {"a": [1]}}'}, "must be scalars"),
        ({**POD, "connector.name": "c", "configuration.names": "x",
          "configuration.params": "[" * 100_000}, "longer than 16384 bytes"),
        ({**POD, "connectors": ",".join(f"c{i}" for i in range(17)), "configuration.names": "x"},
         "names 17 connectors; a volume takes 16"),
        ({**POD, "connector.name": "c", "configuration.names": "x", "token.expiration": "5m"},
         "between 10m and 24h"),
        ({**POD, "connector.name": "c", "configuration.names": "x", "token.expiration": "soon"},
         "90s, 30m or 1h30m"),
    ],
)  # fmt: skip
def test_bad_attributes_say_what_to_fix(context: dict[str, str], message: str):
    with pytest.raises(volume.InvalidVolume, match=message):
        volume.parse(context)


@pytest.fixture
def memory_target(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "mount"
    memoryfs.mount(target)
    yield target
    memoryfs.unmount(target)


def test_a_volume_is_a_bounded_tmpfs_until_it_is_unmounted(tmp_path: Path):
    target = tmp_path / "pods" / "uid" / "mount"
    memoryfs.mount(target)
    try:
        assert memoryfs.is_memory_backed(target)
        memoryfs.mount(target)  # a second publish mounts nothing more
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        (line,) = [m for m in mounts if m.split()[1] == str(target)]
        assert line.split()[2] == "tmpfs"
        assert {"nosuid", "nodev", "noexec", f"size={memoryfs.SIZE_BYTES // 1024}k"} <= set(
            line.split()[3].split(",")
        )
        files.write(target, {"pip.conf": "x"})
    finally:
        memoryfs.unmount(target)
    assert not memoryfs.is_memory_backed(target)
    assert list(target.iterdir()) == []  # what was written went with the tmpfs


def test_files_are_read_only_plain_files_rewritten_in_the_same_inode(memory_target: Path):
    files.write(memory_target, {"pip.conf": "one\n", "sub/.pypirc": "two\n"})
    pip_conf = memory_target / "pip.conf"
    assert pip_conf.read_text() == "one\n"
    assert (memory_target / "sub" / ".pypirc").read_text() == "two\n"
    assert pip_conf.stat().st_mode & 0o777 == 0o444
    assert not pip_conf.is_symlink()
    inode = pip_conf.stat().st_ino
    with pip_conf.open() as pinned:  # what a subPath bind mount holds: this one inode
        files.write(memory_target, {"pip.conf": "three, longer\n"})
        assert pinned.read() == "three, longer\n"
        files.write(memory_target, {"pip.conf": "4\n"})
        pinned.seek(0)
        assert pinned.read() == "4\n"
    assert pip_conf.stat().st_ino == inode
    assert sorted(p.name for p in memory_target.iterdir()) == ["pip.conf"]  # sub/ went


@pytest.mark.parametrize(
    "name", ["../escape", "/etc/passwd", ".new-pip.conf", "a/../../b", "", "a\0b"]
)
def test_names_that_would_leave_the_volume_are_refused(tmp_path: Path, name: str):
    with pytest.raises(files.UnsafeFilename):
        files.check({name: "x"})
    with pytest.raises(files.UnsafeFilename):
        files.write(tmp_path / "t", {name: "x"})


@pytest.mark.parametrize(
    ("rendered", "message"),
    [
        ({"x": "1", "x/y": "2"}, "both a file and a directory"),
        ({"big": "x" * memoryfs.SIZE_BYTES}, "more than a volume holds"),
        ({f"f{i}": "" for i in range(memoryfs.MAX_INODES)}, "more than a volume holds"),
    ],
)
def test_files_that_could_not_be_written_whole_are_refused_before_any_is(
    rendered: dict[str, str], message: str
):
    with pytest.raises(files.UnsafeFilename, match=message):
        files.check(rendered)


def test_a_duplicated_connector_list_renders_each_connector_once():
    parsed = volume.parse({**POD, "connectors": ",".join(["a"] * 100_000)})
    assert parsed.connectors == (("demo", "a"),)


def test_a_reader_never_finds_the_file_missing_or_empty_while_it_is_rewritten(
    memory_target: Path,
):
    # Realistic files (a pip.conf with a token is about 1.3 KiB) whose length changes. A
    # read overlapping the write itself may mix or cut two versions (see csi/files.py);
    # what must never happen is a missing or empty file (truncating first would give one).
    def version(n: int) -> str:
        return f"[global]\nindex-url = http://u:{'t' * (900 + n % 97)}@h/simple/\nn = {n}\n"

    files.write(memory_target, {"pip.conf": version(0)})
    problems: list[str] = []
    whole = 0
    stop = threading.Event()
    expected = {version(n) for n in range(2000)}

    def read() -> None:
        nonlocal whole
        while not stop.is_set():
            try:
                text = (memory_target / "pip.conf").read_text()
            except OSError as exc:
                problems.append(repr(exc))
                continue
            if not text.startswith("[global]\n"):
                problems.append(text)
            whole += text.rstrip("\n") + "\n" in expected

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 2000):
            files.write(memory_target, {"pip.conf": version(n)})
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert whole > 0
    assert (memory_target / "pip.conf").read_text() == version(1999)
