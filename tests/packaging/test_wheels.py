"""What a head unit installs: the dashbridge wheel puts only ``dashbridge`` at the top of
site-packages, carries no simulator, tests or benchmarks, and on its own (a fresh venv, its
declared dependencies, no simulator) checks a config and runs the daemon to READY on a private bus.
The simulator is the second distribution, dashbridge-sim, built from sim/ in the same repository,
and installs into the same namespace."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.daemonproc import DaemonProcess

ROOT = Path(__file__).parents[2]


def _build(src: Path, out: Path) -> Path:
    res = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (whl,) = out.glob("*.whl")
    return whl


def _top_level(whl: Path) -> set[str]:
    with zipfile.ZipFile(whl) as z:
        return {n.split("/")[0] for n in z.namelist()}


def _names(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as z:
        return z.namelist()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("wheels")
    yield _build(ROOT, tmp / "main"), _build(ROOT / "sim", tmp / "sim")


def test_the_wheel_installs_only_the_dashbridge_namespace(wheels: tuple[Path, Path]) -> None:
    main, sim = wheels
    version = (ROOT / "VERSION").read_text().strip()
    assert _top_level(main) == {"dashbridge", f"dashbridge-{version}.dist-info"}
    names = _names(main)
    assert "dashbridge/daemon/app.py" in names and "dashbridge/profiles/pbap/vcard.py" in names
    assert "dashbridge/daemon/schema/0001_meta.sql" in names
    assert "dashbridge/daemon/api/xml/org.dashbridge.Phones1.xml" in names
    assert not [n for n in names if n.startswith(("dashbridge/simulator", "tests", "bench"))]
    # the simulator's wheel: only dashbridge/simulator (no second dashbridge/__init__.py)
    assert _top_level(sim) == {"dashbridge", f"dashbridge_sim-{version}.dist-info"}
    sim_names = _names(sim)
    assert "dashbridge/simulator/world.py" in sim_names
    assert "dashbridge/simulator/scenarios/headline_story.yaml" in sim_names
    assert not [n for n in sim_names if n.startswith("dashbridge/") and not n.startswith("dashbridge/simulator/")]


def test_a_head_unit_install_without_the_simulator_runs_the_daemon(wheels: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    main, _sim = wheels
    venv = tmp_path / "headunit"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)  # type: ignore[attr-defined]
    py = venv / "bin" / "python"
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", str(main)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    probe = subprocess.run([str(py), "-c", "import dashbridge.daemon.app, importlib.util, dashbridge;"
                            "print(importlib.util.find_spec('dashbridge.simulator') is None, dashbridge.version())"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert probe.stdout.split() == ["True", (ROOT / "VERSION").read_text().strip()], probe.stderr
    exe = venv / "bin" / "dashbridged"
    check = subprocess.run([str(exe), "--check-config", "--config", str(ROOT / "systemd" / "config.example.yaml")],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    with PrivateBus("system") as system, PrivateBus("session") as session:
        d = DaemonProcess(system.address, session.address, state_dir=tmp_path / "state", exe=[str(exe)])
        try:
            d.start()  # waits for READY=1 on the notify socket
            # Without the ble extra the companion says it is unavailable; the rest runs.
            end = time.monotonic() + 10.0
            while "companion: unavailable (bleak is not installed)" not in d.log():
                assert time.monotonic() < end, d.log()[-2000:]
                time.sleep(0.05)
            assert "Traceback" not in d.log()
        finally:
            d.cleanup()


def test_nothing_imports_the_folders_by_their_bare_names() -> None:
    """In a checkout, daemon/, profiles/ and simulator/ are importable by their bare names too (the
    repository root is on sys.path), but a wheel has only dashbridge.*: code — and code in strings
    run by ``python -c`` — must use the namespace, or it works here and breaks when installed."""
    import re

    bare = re.compile(r"(?<![\w.])(from (daemon|profiles|simulator)(\.\w+)* import "
                      r"|import (daemon|profiles|simulator)(\.\w+)*\s*($|[;,)\"']| as ))")
    offenders = []
    for folder in ("daemon", "profiles", "simulator", "tests", "bench"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if bare.search(line) and "bare.search" not in line and "re.compile" not in line:
                    offenders.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
