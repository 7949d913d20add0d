"""The CSI driver's pure parts: committed stubs match the .proto, volume attributes parse
as documented, and the atomic writer never leaves a reader without a whole file."""

from __future__ import annotations

import filecmp
import subprocess
import threading
from pathlib import Path

import pytest

from connectors.csi import atomic, volume

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
    assert parsed.token_seconds == 1800
    assert not parsed.per_connector_directories


def test_the_list_form_names_connectors_in_other_namespaces():
    parsed = volume.parse(
        {**POD, "connectors": "a, shared/b", "configuration.names": "pipconf,pypirc,pipconf",
         "token.expiration": "1h"}
    )  # fmt: skip
    assert parsed.connectors == (("demo", "a"), ("shared", "b"))
    assert parsed.configurations == ("pipconf", "pypirc")
    assert parsed.token_seconds == 3600
    assert parsed.per_connector_directories


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"connector.name": "c", "configuration.names": "pipconf"}, "podInfoOnMount"),
        ({**POD, "configuration.names": "pipconf"}, "connector.name is required"),
        ({**POD, "connector.name": "c", "connectors": "d", "configuration.names": "x"}, "not both"),
        ({**POD, "connector.name": "c"}, "configuration.names is required"),
        ({**POD, "connector.name": "c", "configuration.names": "x", "token.expiration": "5m"},
         "between 10m and 24h"),
        ({**POD, "connector.name": "c", "configuration.names": "x", "token.expiration": "soon"},
         "90s, 30m or 1h"),
    ],
)  # fmt: skip
def test_bad_attributes_say_what_to_fix(context: dict[str, str], message: str):
    with pytest.raises(volume.InvalidVolume, match=message):
        volume.parse(context)


def test_files_are_read_only_and_reached_through_the_current_generation(tmp_path: Path):
    atomic.write(tmp_path / "t", {"pip.conf": "one\n", "sub/.pypirc": "two\n"})
    target = tmp_path / "t"
    assert (target / "pip.conf").read_text() == "one\n"
    assert (target / "sub" / ".pypirc").read_text() == "two\n"
    assert (target / "pip.conf").stat().st_mode & 0o777 == 0o444
    assert (target / "pip.conf").is_symlink()
    atomic.write(target, {"pip.conf": "three\n"})
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith("..")) == ["pip.conf"]
    atomic.write(target, {"pip.conf": "four\n"})
    generations = [p for p in target.iterdir() if p.name.startswith("..20")]
    assert len(generations) == 2  # the current one and the one before, no more
    atomic.remove(target)
    assert not target.exists()


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "..data", "a/../../b", ""])
def test_names_that_would_leave_the_volume_are_refused(tmp_path: Path, name: str):
    with pytest.raises(atomic.UnsafeFilename):
        atomic.write(tmp_path / "t", {name: "x"})


def test_a_reader_never_sees_a_missing_or_partial_file_across_many_swaps(tmp_path: Path):
    target = tmp_path / "t"
    body = "x" * 100_000
    atomic.write(target, {"pip.conf": f"0 {body}\n"})
    problems: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                text = (target / "pip.conf").read_text()
                if not text.endswith(f"{body}\n"):
                    problems.append("partial")
            except OSError as exc:
                problems.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 200):
            atomic.write(target, {"pip.conf": f"{n} {body}\n"})
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert (target / "pip.conf").read_text().startswith("199 ")
