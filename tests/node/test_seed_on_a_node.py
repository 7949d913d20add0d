"""The seed quick start on a real node, as its reader runs it against the chart.

Verbatim: the namespace command, the Secret and the Connector (only the registry's address
and credentials filled in: a password-protected pypiserver on the node's address), the
install Job. The upload Job has only its Internet-bound lines replaced, since Pods here
reach nothing off this machine: its tool install takes the same tools from wheels the
python:3-bookworm image carries (also for `python -m build`'s isolated environment), and
its `git clone` copies sampleproject 4.0.0's source from a ConfigMap (an added volume).
The inspection Pod's image is replaced, as its own comment asks.

No RoleBinding is created: the Jobs' ServiceAccount may use the Connector of its own
namespace by default.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from connectors.standalone.localregistry import LocalRegistry
from tests.node.conftest import sample_sdist
from tests.support import leaks, seed
from tests.support.node import Node
from tests.support.waiting import settled

NS = seed.NAMESPACE
PROXY_HOST = f"c-pypi-connector.{NS}.svc.cluster.local"
USERNAME = f"{NS}-pypi-connector"
JWT = r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# The first test also pays for the node's start (images built cold: a few minutes).
pytestmark = pytest.mark.timeout(600)


@dataclass
class Story:
    node: Node
    registry: LocalRegistry
    rendered: list[str] = field(default_factory=list)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = self.node.cluster.kubectl(*args, stdin=stdin, check=check)
        return result.stdout + (result.stderr if not check else "")

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-n", NS, "-f", "-", stdin=manifest)


@pytest.fixture(scope="module")
def story(chart: Node, node_registry: LocalRegistry) -> Iterator[Story]:
    """Steps 1 and 2: the namespace, the Secret and the Connector."""
    told = Story(chart, node_registry)
    told.kubectl("create", "ns", NS)  # the seed's own command
    told.apply(
        seed.step_2(
            address=node_registry.url,
            username=node_registry.username,
            password=node_registry.password,
        )
    )
    yield told
    told.kubectl("delete", "pod", "inspect-pypi-deploy", "-n", NS, "--grace-period=1",
                 "--wait=false", check=False)  # fmt: skip


def job_outcome(story: Story, name: str, timeout: float = 180) -> tuple[str, str]:
    """Wait until the Job is Complete or Failed; that condition and the Job's log."""

    def finished() -> str | None:
        job = json.loads(story.kubectl("get", "job", name, "-n", NS, "-o", "json"))
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
                return str(condition["type"])
        return None

    outcome = settled(finished, timeout, f"Job {name} finished")
    log = ANSI.sub("", story.kubectl("logs", f"job/{name}", "-n", NS))
    leaks.record(f"node: Job {name} log", log)
    return outcome, log


def sample_project() -> tuple[str, list[dict[str, str]]]:
    """sampleproject 4.0.0's files as a ConfigMap, one key each, and the volume `items`
    that lay them out again as a directory."""
    files: dict[str, str] = {}
    with tarfile.open(sample_sdist()) as sdist:
        for member in sdist.getmembers():
            extracted = sdist.extractfile(member) if member.isfile() else None
            if extracted is not None:
                files[member.name.split("/", 1)[1]] = extracted.read().decode()
    keys = {path: f"file{i}" for i, path in enumerate(sorted(files))}
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sampleproject"},
        "data": {keys[path]: text for path, text in files.items()},
    }  # fmt: skip
    items = [{"key": key, "path": f"sampleproject/{path}"} for path, key in keys.items()]
    return json.dumps(configmap), items


def upload_job(items: list[dict[str, str]]) -> str:
    """Step 3's Job with its Internet-bound lines replaced (see the module docstring)."""
    text = seed.replace_lines(
        seed.STEP_3,
        {
            "pip install --upgrade pip build twine": (
                "export PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheels"
                " && pip install --upgrade pip build twine"
            ),
            "git clone https://github.com/pypa/sampleproject.git": (
                "cp -rL /sample/sampleproject ."
            ),
        },
    )
    job: dict[str, Any] = yaml.safe_load(text)
    spec = job["spec"]["template"]["spec"]
    spec["containers"][0]["volumeMounts"].append({"name": "sample", "mountPath": "/sample"})
    spec["volumes"].append(
        {"name": "sample", "configMap": {"name": "sampleproject", "items": items}}
    )
    return json.dumps(job)


def test_step_2_the_connector_shows_the_seeds_columns_and_ready(story: Story):
    def listed() -> list[list[str]] | None:
        out = story.kubectl("get", "connector", "pypi-connector", "-n", NS)
        rows = [line.split() for line in out.splitlines()]
        return rows if len(rows) == 2 and rows[1][3] == "True" else None

    rows = settled(listed, 60, "kubectl get connector showing True")
    assert rows[0] == ["NAME", "CLASS", "ADDRESS", "READY", "REASON", "AGE"]
    assert rows[1][:4] == ["pypi-connector", "pypi", story.registry.url, "True"]


def test_step_3_the_upload_job_publishes_through_the_proxy(story: Story):
    configmap, items = sample_project()
    story.apply(configmap)
    story.apply(upload_job(items))
    outcome, log = job_outcome(story, "twine-upload")
    assert outcome == "Complete", log
    for line in (
        "Successfully built sampleproject-4.0.0.tar.gz and sampleproject-4.0.0-py3-none-any.whl",
        "+ python3 -m twine upload --repository connectors-pypi "
        "dist/sampleproject-4.0.0-py3-none-any.whl dist/sampleproject-4.0.0.tar.gz",
        f"http://{PROXY_HOST}/",
        "Uploading sampleproject-4.0.0-py3-none-any.whl",
        "Uploading sampleproject-4.0.0.tar.gz",
    ):
        assert line in log.splitlines() or line in log, f"{line!r} not in:\n{log}"
    assert sorted(p.name for p in story.registry.packages.iterdir()) == [
        "sampleproject-4.0.0-py3-none-any.whl",
        "sampleproject-4.0.0.tar.gz",
    ]


def test_step_4_the_install_job_runs_unchanged(story: Story):
    assert any(story.registry.packages.glob("sampleproject-4.0.0*")), "step 3 uploaded nothing"
    story.apply(seed.STEP_4)
    outcome, log = job_outcome(story, "pip-install")
    assert outcome == "Complete", log
    lines = log.splitlines()
    assert "+ pip install --upgrade sampleproject --no-deps" in lines
    assert f"Looking in indexes: http://{USERNAME}:****@{PROXY_HOST}/simple/" in lines, log
    assert any(
        line.strip().startswith(f"Downloading http://{PROXY_HOST}/")
        and "sampleproject-4.0.0-py3-none-any.whl" in line
        for line in lines
    ), log
    assert "Successfully installed sampleproject-4.0.0" in lines


def test_the_inspect_pod_sees_both_files_read_only_with_the_seeds_contents(story: Story):
    pod = seed.replace_lines(
        seed.INSPECT,
        {
            "image: docker-mirrors.alauda.cn/library/python:3-bookworm "
            "# Replace with your image contains python": "image: python:3-bookworm"
        },
    )
    story.apply(pod)
    settled(
        lambda: story.kubectl("get", "pod", "inspect-pypi-deploy", "-n", NS, "-o",
                              "jsonpath={.status.phase}") == "Running",
        90, "the inspect Pod Running",
    )  # fmt: skip
    exec_ = ("exec", "inspect-pypi-deploy", "-n", NS, "--")
    listing = story.kubectl(*exec_, "ls", "-l", "/root/.pip/pip.conf", "/root/.pypirc")
    modes = {line.split()[-1]: line.split()[:4] for line in listing.splitlines()}
    assert modes == {
        "/root/.pip/pip.conf": ["-r--r--r--", "1", "root", "root"],
        "/root/.pypirc": ["-r--r--r--", "1", "root", "root"],
    }, listing
    pip_conf = story.kubectl(*exec_, "cat", "/root/.pip/pip.conf")
    pypirc = story.kubectl(*exec_, "cat", "/root/.pypirc")
    story.rendered += [pip_conf, pypirc]
    leaks.record("node: rendered pip.conf and .pypirc", pip_conf + pypirc)
    assert re.fullmatch(
        rf"\[global\]\nindex-url = http://{USERNAME}:{JWT}@{re.escape(PROXY_HOST)}/simple/\n"
        rf"timeout = 30\ntrusted-host = {re.escape(PROXY_HOST)}\n"
        rf"\[install\]\ntrusted-host = {re.escape(PROXY_HOST)}\n",
        pip_conf,
    ), pip_conf
    assert re.fullmatch(
        rf"\[distutils\]\nindex-servers = connectors-pypi\n\[connectors-pypi\]\n"
        rf"repository = http://{re.escape(PROXY_HOST)}/\nusername = {USERNAME}\n"
        rf"password = {JWT}\n",
        pypirc,
    ), pypirc


def test_the_registry_password_is_in_no_log_event_status_or_rendered_file(story: Story):
    places: list[tuple[str, str]] = []
    all_pods = json.loads(story.kubectl("get", "pods", "-A", "-o", "json"))["items"]
    for pod in all_pods:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        log = story.kubectl("logs", name, "-n", namespace, "--all-containers", check=False)
        places.append((f"log of {namespace}/{name}", log))
    places.append(("events", story.kubectl("get", "events", "-A", "-o", "json")))
    places.append(("connectors", story.kubectl("get", "connectors", "-A", "-o", "json")))
    places += [(f"rendered file {i}", text) for i, text in enumerate(story.rendered)]
    for where, data in places:
        leaks.record(f"node: {where}", data)
    assert len(places) > len(all_pods) >= 5  # it saw the components and the seed's Pods
    needles = leaks.needles_for({story.registry.password}, (story.registry.username,))
    found = leaks.find_leaks(needles, [(w, d.encode()) for w, d in places])
    assert found == []
