"""The scenario library (simulator/scenarios/*.yaml) through the runner, as CI runs it: every
expectation in every scenario holds, in parallel, with JUnit output."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dashbridge.simulator.scenario import library

# The whole library, two at a time on this 2-core machine; budget from the issue: under 5 minutes.
LIBRARY_BUDGET_S = 300


# The fake bluetoothd emulates each BlueZ release the daemon supports (issue 13): "current" and 5.66
# (Bonded before Paired, no Device1.Disconnected, the older error names).
BLUEZ_VERSION_ENV = "DASHBRIDGE_SIM_BLUEZ_VERSION"


@pytest.mark.timeout(LIBRARY_BUDGET_S + 30)
@pytest.mark.parametrize("bluez_version", ["current", "5.66"], ids=["bluez-current", "bluez-5.66"])
def test_the_whole_scenario_library_passes(tmp_path: Path, bluez_version: str) -> None:
    files = library()
    assert len(files) >= 7, files
    junit = tmp_path / "scenarios.xml"
    jobs = str(max(2, min(4, os.cpu_count() or 2)))
    env = dict(os.environ, **{BLUEZ_VERSION_ENV: bluez_version})
    r = subprocess.run([sys.executable, "-m", "dashbridge.simulator", "run", *files, "-j", jobs, "--junit", str(junit)],
                       capture_output=True, text=True, timeout=LIBRARY_BUDGET_S, env=env)
    report = r.stdout + r.stderr
    assert r.returncode == 0, report
    root = ET.parse(junit).getroot()
    assert root.get("tests") == str(len(files)), report
    assert root.get("failures") == "0" and root.get("errors") == "0", report
    print(report)
