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


# Step 3, the upload Job, as the seed writes it.
STEP_3 = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: twine-upload
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: twine
        image: python:3-bookworm
        imagePullPolicy: IfNotPresent
        command:
        - "sh"
        - "-c"
        - |
          set -ex
          pip install --upgrade pip build twine
          git clone https://github.com/pypa/sampleproject.git
          cd sampleproject
          python -m build
          python3 -m twine upload --repository connectors-pypi dist/*
        volumeMounts:
        - name: pypirc
          mountPath: /root/.pypirc
          subPath: .pypirc
      volumes:
      - name: pypirc
        csi:
          readOnly: true
          driver: connectors-csi
          volumeAttributes:
            connector.name: "pypi-connector"
            configuration.names: "pypirc"
"""

# Step 4, the install Job, as the seed writes it.
STEP_4 = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: pip-install
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: pip
        image: python:3-bookworm
        imagePullPolicy: IfNotPresent
        command:
        - "sh"
        - "-c"
        - |
          set -ex
          pip install --upgrade sampleproject --no-deps
        volumeMounts:
        - name: pipconf
          mountPath: /root/.pip/pip.conf
          subPath: pip.conf
      volumes:
      - name: pipconf
        csi:
          readOnly: true
          driver: connectors-csi
          volumeAttributes:
            connector.name: "pypi-connector"
            configuration.names: "pipconf"
"""

# The inspection Pod, as the seed writes it; its image line says to replace it.
INSPECT = """\
apiVersion: v1
kind: Pod
metadata:
  name: inspect-pypi-deploy
spec:
  restartPolicy: Never
  containers:
  - name: pip
    image: docker-mirrors.alauda.cn/library/python:3-bookworm # Replace with your image contains python
    command: ["sleep", "3600"]
    volumeMounts:
    - name: pipconf
      mountPath: /root/.pip/pip.conf
      subPath: pip.conf
    - name: pypirc
      mountPath: /root/.pypirc
      subPath: .pypirc
  volumes:
  - name: pipconf
    csi:
      readOnly: true
      driver: connectors-csi
      volumeAttributes:
        connector.name: "pypi-connector"
        configuration.names: "pipconf"
  - name: pypirc
    csi:
      readOnly: true
      driver: connectors-csi
      volumeAttributes:
        connector.name: "pypi-connector"
        configuration.names: "pypirc"
"""  # noqa: E501 (the seed's own comment)


def replace_lines(manifest: str, replacements: dict[str, str]) -> str:
    """The manifest with whole lines replaced, each found exactly once (so a change in the
    seed's text fails loudly instead of leaving a line unreplaced)."""
    lines = manifest.splitlines(keepends=True)
    for old, new in replacements.items():
        found = [i for i, line in enumerate(lines) if line.strip() == old]
        assert len(found) == 1, f"{old!r} is not one line of the manifest"
        indent = lines[found[0]][: len(lines[found[0]]) - len(lines[found[0]].lstrip())]
        lines[found[0]] = "".join(f"{indent}{part}\n" for part in new.splitlines())
    return "".join(lines)
