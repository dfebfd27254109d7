"""State store under real faults (issue 11, item 3): a database locked by another process, a full
disk and a read-only state directory are refused with StoreUnavailable and left exactly as they were
(served again once the fault clears); only real corruption is moved aside, never over an earlier
set-aside; the directory is 0700 and the files 0600 whatever the umask.

Real files and real processes: the lock is held by a second python process, the full disk and the
read-only directory are a small tmpfs (we run as root in CI; skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon import store as store_mod
from dashbridge.daemon.dbus.call import call, unwrap
from dashbridge.daemon.store import DB_NAME, Store, StoreUnavailable, latest_version
from dashbridge.simulator.daemonproc import DaemonProcess

ADA = "AA:BB:CC:DD:EE:01"

LOCKER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("INSERT INTO meta(key, value) VALUES ('uncommitted', 'x')")
print("locked", flush=True)
hold = float(sys.argv[2])
if hold > 0:
    time.sleep(hold)
else:
    sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


def _seed(path: Path, *, journal: str = "wal") -> None:
    s = Store(path)
    s.execute("INSERT INTO meta(key, value) VALUES ('driver', 'ada')")
    s.execute("INSERT INTO phones(address, name, paired_at) VALUES (?, 'Ada''s phone', 1.0)", (ADA,))
    if journal != "wal":
        s.execute(f"PRAGMA journal_mode={journal}")
    s.close()


def _served(path: Path) -> None:
    """The original data, through a normal Store open."""
    s = Store(path)
    try:
        assert s.version == latest_version()
        assert s.execute("SELECT value FROM meta WHERE key='driver'").fetchone() == ("ada",)
        assert s.execute("SELECT value FROM meta WHERE key='uncommitted'").fetchone() is None
        assert s.execute("SELECT address FROM phones").fetchall() == [(ADA,)]
    finally:
        s.close()


def _asides(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".corrupt-" in p.name)


@contextlib.contextmanager
def _locked(path: Path, hold: float = 0.0) -> Iterator[subprocess.Popen[str]]:
    """A second process holding ``BEGIN EXCLUSIVE`` on ``path`` until the block ends (or ``hold`` s)."""
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(path), str(hold)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write("\n")
                proc.stdin.flush()
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs(size)`` -> a fresh tmpfs mount point (unmounted afterwards)."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (need root / CAP_SYS_ADMIN): {res.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _remount(point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(point)], check=True)


# -- locked by another process ---------------------------------------------------------------------


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_locked_database_is_refused_and_untouched(tmp_path: Path, journal: str) -> None:
    path = tmp_path / DB_NAME
    _seed(path, journal=journal)
    before = path.read_bytes()
    with _locked(path):
        with pytest.raises(StoreUnavailable, match=r"database is locked.*SQLITE_BUSY"):
            Store(path, busy_timeout=0.3)
        assert path.read_bytes() == before
    assert _asides(tmp_path) == []
    _served(path)


def test_a_short_lock_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    _seed(path)
    with _locked(path, hold=0.5):
        _served(path)  # busy_timeout (5 s) outlasts the other process's transaction


# -- full disk --------------------------------------------------------------------------------------


def _fill(directory: Path) -> Path:
    """Fill the file system to the last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("shm_exists", [False, True], ids=["fresh-open", "another-reader-open"])
def test_full_disk_is_refused_and_untouched(tmpfs: Callable[[str], Path], shm_exists: bool) -> None:
    state = tmpfs("1m") / "state"
    path = state / DB_NAME
    _seed(path)
    # Another reader keeps -wal/-shm in place, so the failure is the write itself (SQLITE_FULL),
    # not the shared-memory file (SQLITE_IOERR_SHMSIZE).
    reader = sqlite3.connect(path) if shm_exists else None
    if reader is not None:
        reader.execute("SELECT COUNT(*) FROM meta").fetchone()
    try:
        filler = _fill(state)
        before = path.read_bytes()
        with pytest.raises(StoreUnavailable, match="SQLITE_FULL" if shm_exists else "SQLITE_IOERR"):
            Store(path)
        assert path.read_bytes() == before
        assert _asides(state) == []
        filler.unlink()  # the fault clears
        _served(path)
    finally:
        if reader is not None:
            reader.close()


def test_full_disk_during_a_migration_keeps_the_old_version(tmpfs: Callable[[str], Path]) -> None:
    state = tmpfs("1m") / "state"
    path = state / DB_NAME
    s = Store(path, upto=1)
    s.execute("INSERT INTO meta(key, value) VALUES ('driver', 'ada')")
    s.close()
    reader = sqlite3.connect(path)  # keeps -shm so the failure is the migration's write
    reader.execute("SELECT COUNT(*) FROM meta").fetchone()
    try:
        filler = _fill(state)
        with pytest.raises(StoreUnavailable, match=r"SQLITE_FULL|SQLITE_IOERR"):
            Store(path)
        assert reader.execute("PRAGMA user_version").fetchone() == (1,)
        filler.unlink()
    finally:
        reader.close()
    s = Store(path)
    assert s.version == latest_version()
    assert s.execute("SELECT value FROM meta WHERE key='driver'").fetchone() == ("ada",)
    s.close()
    assert _asides(state) == []


# -- read-only state directory -------------------------------------------------------------------------


def test_read_only_state_directory_is_refused_and_untouched(tmpfs: Callable[[str], Path]) -> None:
    point = tmpfs("4m")
    path = point / "state" / DB_NAME
    _seed(path)
    before = path.read_bytes()
    _remount(point, "ro")
    try:
        with pytest.raises(StoreUnavailable, match="Read-only file system"):
            Store(path)
        assert path.read_bytes() == before
    finally:
        _remount(point, "rw")
    assert _asides(path.parent) == []
    _served(path)


def test_unwritable_state_directory_as_an_unprivileged_user(tmp_path: Path) -> None:
    """chmod 0500 does not stop root, so the open runs as ``nobody`` (via setpriv)."""
    if os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists():
        pytest.skip("needs root and setpriv to run the child as nobody")
    tmp_path.chmod(0o755)
    state = tmp_path / "state"
    path = state / DB_NAME
    _seed(path)
    os.chown(state, 65534, 65534)
    os.chown(path, 65534, 65534)
    state.chmod(0o500)  # the directory: no new -wal/-shm possible; the file itself is writable
    child = ("import sys; from pathlib import Path; from dashbridge.daemon.store import Store, StoreUnavailable\n"
             "try:\n    Store(Path(sys.argv[1]))\nexcept StoreUnavailable as e:\n    print(e); sys.exit(3)\n")
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                          "-c", child, str(path)], capture_output=True, text=True,
                         cwd=Path(store_mod.__file__).parents[1])
    assert res.returncode == 3, res.stderr
    assert "unavailable" in res.stdout and "nothing was changed" in res.stdout
    state.chmod(0o700)
    assert _asides(state) == []
    _served(path)


# -- real corruption --------------------------------------------------------------------------------


def test_two_corruptions_in_the_same_microsecond_get_two_asides(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod.time, "time_ns", lambda: 1_404_172_800_123_456_000)  # frozen clock
    path = tmp_path / DB_NAME
    junk_a = b"SQLite format 3\x00" + b"\x13" * 8000
    junk_b = b"not a database at all " * 400
    path.write_bytes(junk_a)
    Store(path).close()
    path.write_bytes(junk_b)
    Store(path).close()
    asides = _asides(tmp_path)
    assert len(asides) == 2, asides
    assert {p.read_bytes() for p in asides} == {junk_a, junk_b}
    assert all(p.stat().st_size > 0 for p in asides)
    assert all(f"-{os.getpid()}" in p.name and ".123456-" in p.name for p in asides)
    _ = Store(path)  # the live database is a fresh, working one
    assert _.version == latest_version()
    _.close()


def test_move_aside_never_overwrites_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod.time, "time_ns", lambda: 1_404_172_800_000_001_000)
    monkeypatch.setattr(store_mod.os, "getpid", lambda: 4242)
    path = tmp_path / DB_NAME
    path.write_bytes(b"junk" * 1000)
    planted = tmp_path / f"{DB_NAME}.corrupt-{_stamp(1_404_172_800_000_001)}-4242"
    planted.write_bytes(b"an earlier set-aside")
    Store(path).close()
    assert planted.read_bytes() == b"an earlier set-aside"
    assert [p.read_bytes() for p in _asides(tmp_path) if p != planted] == [b"junk" * 1000]


def _stamp(us: int) -> str:
    import time

    return time.strftime("%Y%m%dT%H%M%S", time.localtime(us // 1_000_000)) + f".{us % 1_000_000:06d}"


def test_corruption_in_separate_processes_same_second(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    child = "import sys; from pathlib import Path; from dashbridge.daemon.store import Store; Store(Path(sys.argv[1])).close()"
    junks = [b"garbage one " * 500, b"garbage two " * 500]
    for junk in junks:
        path.write_bytes(junk)
        subprocess.run([sys.executable, "-c", child, str(path)], check=True,
                       cwd=Path(store_mod.__file__).parents[1])
    asides = _asides(tmp_path)
    assert sorted(p.read_bytes() for p in asides) == sorted(junks)


# -- modes ------------------------------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_modes_are_private_under_umask_0(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "new" / "state" / DB_NAME
        s = Store(path)
        s.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')")
        assert _mode(path.parent) == 0o700
        for suffix in ("", "-wal", "-shm"):
            assert _mode(Path(str(path) + suffix)) == 0o600, suffix
        s.close()
        # existing, too-open ones are tightened
        existing = tmp_path / "old"
        existing.mkdir(mode=0o777)
        os.chmod(existing, 0o777)
        sqlite3.connect(existing / DB_NAME).close()
        os.chmod(existing / DB_NAME, 0o666)
        for suffix in ("-wal", "-shm"):
            (existing / (DB_NAME + suffix)).touch(mode=0o666)
        s = Store(existing / DB_NAME)
        assert _mode(existing) == 0o700
        for suffix in ("", "-wal", "-shm"):
            assert _mode(existing / (DB_NAME + suffix)) == 0o600, suffix
        s.close()
    finally:
        os.umask(old)


# -- the real daemon ----------------------------------------------------------------------------------


def _one_line(log: str, needle: str) -> str:
    lines = [ln for ln in log.splitlines() if needle in ln]
    assert len(lines) == 1, log
    assert "Traceback" not in log, log
    return lines[0]


async def _phones(client: MessageBus) -> list[str]:
    (phones,) = await call(client, "org.dashbridge", "/org/dashbridge", "org.dashbridge.Phones1",
                           "ListPhones", "", [], timeout=10.0)
    return [unwrap(p)["Address"] for p in phones]


async def test_daemon_exits_1_with_one_line_while_locked_then_serves_the_data(
        daemon_factory: Callable[..., DaemonProcess], client: MessageBus, tmp_path: Path) -> None:
    state = tmp_path / "state"
    _seed(state / DB_NAME)
    with _locked(state / DB_NAME):
        d = daemon_factory(state_dir=state, start=False)
        d.start(wait_ready=False)
        assert d.proc is not None
        rc = d.proc.wait(timeout=30)  # busy_timeout (5 s), then out
        line = _one_line(d.log(), "cannot start")
        print(f"\ndashbridged exit status {rc}: {line}")
        assert rc == 1  # not 78: systemd's Restart=on-failure tries again
        assert line.startswith("dashbridged: cannot start: state database ")
        assert "SQLITE_BUSY" in line and "nothing was changed" in line
        assert not d.notify.seen("READY")
    assert _asides(state) == []
    d2 = daemon_factory(state_dir=state)  # the lock is gone: starts, with the driver's data
    assert await _phones(client) == [ADA]
    assert d2.stop() == 0
    _served(state / DB_NAME)


async def test_daemon_exits_1_on_a_read_only_state_directory_then_serves_the_data(
        daemon_factory: Callable[..., DaemonProcess], client: MessageBus, tmpfs: Callable[[str], Path]) -> None:
    point = tmpfs("4m")
    state = point / "state"
    _seed(state / DB_NAME)
    _remount(point, "ro")
    try:
        d = daemon_factory(state_dir=state, start=False)
        d.start(wait_ready=False)
        assert d.proc is not None
        rc = d.proc.wait(timeout=30)
        line = _one_line(d.log(), "cannot start")
        print(f"\ndashbridged exit status {rc}: {line}")
        assert rc == 1
        assert "Read-only file system" in line
    finally:
        _remount(point, "rw")
    daemon_factory(state_dir=state)
    assert await _phones(client) == [ADA]
