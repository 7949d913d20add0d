"""`connectors demo` tells the seed story end to end on this machine, as a user runs it."""

from __future__ import annotations

import subprocess

from tests.support.standalone import CONNECTORS


def test_demo_uploads_installs_and_shows_no_password_anywhere():
    result = subprocess.run(
        [CONNECTORS, "demo"], capture_output=True, text=True, timeout=600, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    table = out.split("$ connectors get connectors -n connectors-pypi-demo\n")[1].splitlines()
    assert table[0].split() == ["NAME", "CLASS", "ADDRESS", "READY", "REASON", "AGE"]
    assert table[1].split()[:2] == ["pypi-connector", "pypi"]
    assert table[1].split()[3] == "True"
    assert "Successfully installed sampleproject-4.0.0" in out
    assert "index-servers = connectors-pypi" in out
    assert "/simple/" in out and "timeout = 30" in out
    assert "\x1b[" not in out  # no terminal escape codes in output that is not a terminal
    assert "The registry password appears in none of the" in out
    assert [line for line in out.splitlines() if line.startswith("==> [")] == [
        f"==> [{n}/7] " + line.split("] ", 1)[1]
        for n, line in enumerate((x for x in out.splitlines() if x.startswith("==> [")), 1)
    ]
