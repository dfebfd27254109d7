"""Connecting paired phones through the real bluetoothd 5.66 when the phone does not answer.

bluetoothd connects a BR/EDR phone by opening L2CAP/RFCOMM sockets (first SDP, PSM 1, to find the
profile's channel), not through the management interface; the shim (``shim.c``) lets those
``connect()`` calls fail with the errno the management server picks for the phone: EHOSTDOWN is
the kernel's page timeout, ECONNREFUSED a phone refusing.  bluetoothd turns the errno into its
``br-connection-*`` reason (src/error.c), the daemon into its own (``classify_connect_error``).

A profile must be there for bluetoothd to connect anything: as ofonod does on a head unit, the
test registers the hands-free profile (HFP HF) with ``ProfileManager1.RegisterProfile``.
"""

from __future__ import annotations

import errno

from dashbridge.daemon.dbus.call import call
from tests.bus.pairing_helpers import list_phones, phones_call, wait_ready

from .conftest import Rig
from .support import poll

GALAXY = "5C:51:81:AB:CD:03"
HFP_HF = "0000111e-0000-1000-8000-00805f9b34fb"
HFP_AG = "0000111f-0000-1000-8000-00805f9b34fb"


def redacted(address: str) -> str:
    return "XX:XX:XX:XX:" + address[-5:]  # how the daemon's INFO lines name a phone (daemon/logs.py)


async def restart_with_stored_phone(rig: Rig, connect_errno: int) -> int:
    """Car restart: a phone bonded earlier is in bluetoothd's storage; ofonod's HFP profile is
    registered before dashbridged starts.  Returns the monitor mark before the daemon started."""
    await wait_ready(rig.client, rig.signals, 10)
    rig.daemon.stop()
    await rig.bluetoothd.stop()
    rig.mgmt.add_phone(GALAXY, "Galaxy").connect_errno = connect_errno
    # HFP AG only: with A2DP source stored too, bluetoothd 5.66 would try the car's a2dp-source
    # profile after HFP, which fails here with ENOPROTOOPT (no media endpoint registered, no audio
    # stack) — and Connect's error is the *last* profile's (src/device.c connect_next), so the page
    # timeout would read "br-connection-profile-unavailable".
    rig.bluetoothd.seed_paired_phone(GALAXY, "Galaxy", [HFP_AG])
    await rig.bluetoothd.start()
    await call(rig.client, "org.bluez", "/org/bluez", "org.bluez.ProfileManager1", "RegisterProfile", "osa{sv}",
               ["/test/ofono/hfp_hf", HFP_HF, {}], timeout=5)
    mark = rig.monitor.mark()
    rig.daemon.start(wait_ready=False)
    await rig.daemon.await_ready()
    return mark


async def connect_error(rig: Rig, address: str) -> str:
    async def attempt() -> str | None:
        try:
            await phones_call(rig.client, "Connect", "s", [address], timeout=15)
        except Exception as exc:
            return None if "Error.Busy" in str(exc) else str(exc)
        raise AssertionError("Connect succeeded to a phone that does not answer")

    return str(await poll(attempt, 15, "Connect answered", interval=0.2))


async def test_autoconnect_page_timeout(rig: Rig) -> None:
    """The phone is out of range: bluetoothd's connect fails with a page timeout
    (``br-connection-page-timeout``); the daemon adopts the stored phone, auto-connects it, maps
    the failure to out_of_range, and a dashboard's Connect says "out of range"."""
    mark = await restart_with_stored_phone(rig, errno.EHOSTDOWN)
    await rig.monitor.wait(lambda: rig.monitor.calls("Connect", mark), 10)
    await poll(lambda: f"auto-connect: {redacted(GALAXY)} not connected (out_of_range)" in rig.daemon.log(), 10,
               "auto-connect giving up with out_of_range")
    assert "br-connection-page-timeout -> out_of_range" in rig.daemon.log()
    # bluetoothd paged the phone for the profile (SDP first: the HF profile's channel is unknown)
    assert [c for c in rig.mgmt.radio_connects if c[1] == GALAXY and c[3] == errno.EHOSTDOWN]
    phones = await list_phones(rig.client)
    assert phones[GALAXY]["Name"] == "Galaxy"  # adopted: paired outside dashbridge (its storage)
    await poll(lambda: _state(rig, GALAXY, "disconnected"), 10, "phone settled as disconnected")
    err = await connect_error(rig, GALAXY)
    assert "org.dashbridge.Error.Failed" in err and "out of range" in err and "page timeout" in err, err


async def test_phone_refuses_the_connection(rig: Rig) -> None:
    """The phone refuses (``br-connection-refused``): not retried, the dashboard is told."""
    mark = await restart_with_stored_phone(rig, errno.ECONNREFUSED)
    await rig.monitor.wait(lambda: rig.monitor.calls("Connect", mark), 10)
    await poll(lambda: f"auto-connect: {redacted(GALAXY)} not connected (refused)" in rig.daemon.log(), 10,
               "auto-connect giving up with refused")
    err = await connect_error(rig, GALAXY)
    assert "org.dashbridge.Error.Failed" in err and "refused" in err, err


async def _state(rig: Rig, address: str, state: str) -> bool:
    return (await list_phones(rig.client))[address]["State"] == state
