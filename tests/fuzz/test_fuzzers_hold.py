"""Each atheris fuzzer runs a bounded number of inputs in CI and finds nothing; run one
longer by hand with `python tests/fuzz/fuzz_parsers.py TARGET -runs=1000000`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("fuzz_parsers.py")


@pytest.mark.parametrize("target", ["target", "auth", "manifest", "template", "rewrite"])
def test_fuzzer_finds_no_crash(target: str, tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(HARNESS), target, "-runs=4000", "-max_len=512", "-seed=1",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 4000 runs" in result.stderr
