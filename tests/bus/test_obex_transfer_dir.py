"""obexd writes what it pulls into the daemon's transfer directory, never its own /tmp (issue 11,
item 7): under systemd the daemon has PrivateTmp=yes and could not open obexd's temp files.  Every
PullAll and Message1.Get names an explicit absolute target there; the file is always deleted."""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from dashbridge.daemon.config import Config
from dashbridge.daemon.transfers import PREFIX, TransferDir, resolve
from dashbridge.simulator.bus import PrivateBus
from dashbridge.simulator.obex import FakeObexd
from dashbridge.simulator.phone import PhoneMessage, VirtualPhone

from .map_helpers import MSG_IFACE, PHONE, MiniDaemon, Signals, api, make_config
from .pbap_helpers import PHONE as PBAP_PHONE
from .pbap_helpers import PbapWorld, pbap_world


@pytest.fixture
async def world(system_bus: PrivateBus, session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[PbapWorld]:
    phone = VirtualPhone(PBAP_PHONE, name="Test phone", generated_contacts=150, pbap_history=5)  # type: ignore[arg-type]
    async with pbap_world(system_bus, session_bus, tmp_path, [phone], page_size=100) as w:
        yield w


async def test_pbap_pages_are_written_into_the_transfer_dir_and_removed(world: PbapWorld) -> None:
    assert world.obexd is not None
    obex_dir = world.state_dir / "obex"  # the default outside systemd: <state_directory>/obex
    assert stat.S_IMODE(obex_dir.stat().st_mode) == 0o700
    mark = world.mark()
    world.connect()
    done = await world.wait_state("synced", after=mark)
    assert done["Contacts"] == 150
    targets = world.obexd.targetfiles
    assert len(targets) == world.transfers_started > 0
    assert len(set(targets)) == len(targets), "one unique file per transfer"
    for t in targets:
        assert os.path.isabs(t) and Path(t).parent == obex_dir and Path(t).name.startswith(PREFIX)
    assert os.listdir(obex_dir) == []
    assert world.obex_files() == [], "nothing in obexd's own temp directory"


async def test_map_message_is_written_into_the_configured_dir_and_removed(
        system_bus: PrivateBus, session_bus: PrivateBus, client: MessageBus, tmp_path: Path) -> None:
    phone = VirtualPhone(PHONE, name="Test phone")
    phone.messages.append(PhoneMessage(handle=101, sender="+447700900001", body="on my way",
                                       timestamp=time.strftime("%Y%m%dT%H%M%S")))
    obexd = await FakeObexd.start(session_bus.address, [phone], tmpdir=tmp_path / "obexd-tmp")
    configured = tmp_path / "run" / "dashbridge-obex"
    cfg = make_config(tmp_path / "state")
    cfg = dataclasses.replace(cfg, buses=dataclasses.replace(cfg.buses, transfer_dir=str(configured)))
    d = await MiniDaemon(system_bus.address, session_bus.address, tmp_path / "state", config=cfg).start()
    try:
        sig = await Signals(client).start()
        d.connect_phone()
        await sig.wait("SyncFinished", lambda b: b[0] == PHONE)
        full = await api(client, MSG_IFACE, "Get", "s", [f"{PHONE}/101"])
        assert full["body"] == "on my way"
        assert obexd.targetfiles, "Message1.Get named a target"
        assert {Path(t).parent for t in obexd.targetfiles} == {configured}
        assert os.listdir(configured) == []
        assert not (tmp_path / "obexd-tmp").exists() or os.listdir(tmp_path / "obexd-tmp") == []
    finally:
        await d.stop()
        await obexd.stop()


def test_where_the_directory_is(tmp_path: Path) -> None:
    cfg = Config(state_directory="/var/lib/dashbridge")
    assert resolve(cfg, {}) == Path("/var/lib/dashbridge/obex")
    assert resolve(cfg, {"RUNTIME_DIRECTORY": "/run/dashbridge"}) == Path("/run/dashbridge/obex")
    pinned = dataclasses.replace(cfg, buses=dataclasses.replace(cfg.buses, transfer_dir="/run/x"))
    assert resolve(pinned, {"RUNTIME_DIRECTORY": "/run/dashbridge"}) == Path("/run/x")


def test_modes_stale_files_and_a_group_shared_directory(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        own = TransferDir(tmp_path / "own").prepare()
        assert stat.S_IMODE(own.path.stat().st_mode) == 0o700
        t = own.new_target("map")
        assert stat.S_IMODE(os.stat(t).st_mode) == 0o600 and os.path.getsize(t) == 0
        (own.path / "not-ours").write_text("x")
        TransferDir(own.path).prepare()  # a restart after a crash: our leftovers go, nothing else
        assert os.listdir(own.path) == ["not-ours"]
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o2777)  # an integrator's group directory, accidentally world-writable
        td = TransferDir(shared).prepare()
        assert stat.S_IMODE(shared.stat().st_mode) == 0o2770
        assert stat.S_IMODE(os.stat(td.new_target("pbap")).st_mode) == 0o660
    finally:
        os.umask(old)
