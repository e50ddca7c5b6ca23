"""
The in-process benchmarks still run against the package: each is run
with the smallest sizes, and must write its figures as JSON.

They call the component's internals directly (the table, the router, the
strategies), so a change of those signatures breaks them silently unless
they run: C{benchmarks/dispatch.py} failed so once, after
C{RequestTable.add} took C{now} as a keyword.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SMALLEST = {
    "dispatch.py": ["--resources", "2", "--eligible", "online", "undrained", "features", "--budget", "0.001"],
    "scaling.py": [
        "--count", "20", "--repeat", "1", "--resources", "2", "--requesters", "1",
        "--inflight", "0", "--proxies", "1",
    ],
    "flood.py": ["--count", "50"],
}


@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_in_process_benchmark_runs(script: str, tmp_path: Path) -> None:
    output = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *SMALLEST[script], "--json", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures, "no figures written"
