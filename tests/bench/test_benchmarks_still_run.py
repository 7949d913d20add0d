"""The benchmarks in bench/ still run end to end (quick mode). Nothing here judges a time:
speed is measured by running the benchmarks themselves (docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require
from tests.support import testcluster

ROOT = Path(__file__).parents[2]


def test_operator_scale_benchmark_runs_and_reports_every_connector_ready():
    missing = testcluster.missing_reason()
    require(missing is None, missing or "")
    command = ["bench.operator_scale", "--quick", "--registry-hash", "apr_md5_crypt"]
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines()[1:])
    assert rows["connectors"].strip() == rows["ready"].strip() == "20"
    assert float(rows["api_requests_per_connector"]) > 0
