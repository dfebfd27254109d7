"""The real-oFono tier's moving parts: ``ofonod`` as a child on a private system bus, and the fake
bluetoothd (``simulator/bluez.py``) taught to hand ofonod's hands-free profile a socketpair whose
other end is an :class:`~tests.realofono.atphone.ATPhone`.

What we learned running the real ofonod (Debian ``ofono`` 1.31) this way — differences from the
reference (../shared/reference/bluez-obex-ofono-api.md §4) are marked REF≠REAL:

* ofonod reaches bluetoothd through ``g_dbus_client_new(conn, "org.bluez", "/org/bluez")``:
  ``GetManagedObjects`` on ``/`` of whoever owns ``org.bluez``, then ``RegisterProfile
  ("/bluetooth/profile/hfp_hf", 0000111e-..., {Version 0x0107, Features, Name "hfp_hf"})`` on
  ``/org/bluez``.  A modem appears for each Device1 with ``Paired`` and the HFP-AG UUID.
* Powering a modem makes ofonod call ``Device1.ConnectProfile("0000111f-...")`` — the *remote*
  (audio gateway) UUID, as bluetoothd's API defines it.  The fake bluetoothd at the time of
  writing only accepted the local UUID there, so :class:`HfpBluez` maps remote to local first.
* ``NewConnection`` needs ``Version`` (``q``) in the fd properties, else ``Rejected``; the reply
  comes only after the whole service-level handshake (BRSF, CIND=?, CIND?, CMER, CHLD=?), so the
  phone end must be answering *while* the call is pending.  ofonod calls ``getsockname`` /
  ``getpeername`` on the fd expecting RFCOMM; on a Unix socketpair they succeed with an AF_UNIX
  address, which ofonod only prints, so a socketpair works.
* D-Bus policy: the Debian package's ``/etc/dbus-1/system.d/ofono.conf`` lets only root (and
  at_console) talk to ``org.ofono``; a daemon running as a service user needs its own drop-in.
  Our private bus (``simulator/bus.py``) allows everything, so the tier does not exercise the
  policy — the production policy file must grant the dashbridge user ``send_destination=org.ofono``.
* REF≠REAL: an *unpowered* HFP modem has no ``Serial`` (it comes from the devinfo atom once the
  modem is powered), so the daemon recognises a phone's modem by its path
  (``/hfp`` + the BlueZ device path) — see ``profiles/hfp/models.py``.
* REF≠REAL (detail): ``Interfaces`` grows in two steps after the handshake — CallVolume,
  Handsfree, NetworkRegistration first; VoiceCallManager only after ``AT+CLIP``/``AT+CCWA`` are
  answered — and the operator name, signal and battery arrive as ``PropertyChanged`` after the
  interfaces appear.
* On SIGTERM ofonod removes every modem (``ModemRemoved``) *before* it leaves the bus; a crash
  (SIGKILL) just drops the name.  Calls therefore wait briefly on a removed modem before being
  declared lost (``MODEM_GONE_GRACE_S`` in the handler).
* A request queued at a frozen ofonod is still executed when it runs again: a Dial that timed out
  for the dashboard is placed later and shows up as an outgoing call (tested).
* As the reference says: ``VoiceCall.Answer`` on a call that is not ``incoming`` is ``Failed``;
  ``Hangup`` of the single active call is ``AT+CHUP``; a waiting call is rejected with
  ``AT+CHLD=0`` and answered with ``AT+CHLD=2`` (HoldAndAnswer); ofonod also sends
  ``AT+XAPL``/``AT+APLSIRI?``, ``AT+VGS``/``AT+VGM`` and ``AT+CNUM``, which a phone may answer
  with a bare ``OK``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant

from dashbridge.simulator.bluez import LOCAL_TO_REMOTE, PROFILE, FakeBluez, parse_uuid, uuid16
from tests.realproc import RealProcess

from .atphone import ATPhone

HFP_HF = uuid16(0x111E)  # the car's side, registered by ofonod
HFP_AG = uuid16(0x111F)  # the phone's side
REMOTE_TO_LOCAL = {remote: local for local, remote in LOCAL_TO_REMOTE.items()}

# Plugins ofonod needs for HFP; everything else (udev scanning, modems on serial ports, ConnMan,
# UPower, phonesim...) is off so the tier is quick and quiet.
OFONO_PLUGINS = "hfp_bluez5,hfpmodem,atmodem"
START_DEADLINE_S = 10.0


def ofonod_path() -> str:
    exe = shutil.which("ofonod") or ("/usr/sbin/ofonod" if os.access("/usr/sbin/ofonod", os.X_OK) else None)
    if exe is None:
        raise RuntimeError("ofonod is not installed: the real-oFono tier needs the Debian package 'ofono' "
                           "(make sysdeps installs it)")
    return exe


class HfpBluez(FakeBluez):
    """The fake bluetoothd, with an AT phone on the phone end of each HFP connection."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.at_phones: dict[str, ATPhone] = {}
        self.new_connections: list[tuple[str, str]] = []  # (address, "ok" | error name)

    def _m_Device1_ConnectProfile(self, msg: Message, obj: Any) -> Any:
        # bluetoothd's ConnectProfile takes the remote service UUID (doc/org.bluez.Device.rst);
        # ofonod passes HFP AG.  Hand the fake the local profile it keys connections by.
        (text,) = msg.body
        uuid = parse_uuid(text) if isinstance(text, str) else None
        if uuid in REMOTE_TO_LOCAL:
            msg.body = [REMOTE_TO_LOCAL[uuid]]
        return super()._m_Device1_ConnectProfile(msg, obj)

    async def _new_connection(self, dev: Any, prof: Any) -> bool:
        at = self.at_phones.get(dev.phone.address)
        if prof.uuid != HFP_HF or at is None:
            return await super()._new_connection(dev, prof)
        car_end, phone_end = socket.socketpair()
        at.attach(phone_end)  # the phone answers the handshake while NewConnection is pending

        def car_closed() -> None:
            # ofonod closed the RFCOMM socket (Powered=false, or ofonod exited): bluetoothd sees
            # the profile disconnect.  (The fake keeps the profile "connected" otherwise, and a
            # new ofonod's ConnectProfile would then never get a NewConnection.)
            if HFP_HF in dev.profiles:
                dev.profiles.discard(HFP_HF)
                self._notify_profiles(dev, {HFP_HF}, connected=False)

        at.on_closed = car_closed
        props = {"Version": Variant("q", 0x0107), "Features": Variant("q", 0)}
        try:
            reply = await self._call(prof.sender, prof.path, PROFILE, "NewConnection", "oha{sv}",
                                     [dev.path, 0, props], self.t.profile_timeout, unix_fds=[car_end.fileno()])
        finally:
            car_end.close()
        if reply is None or reply.message_type == MessageType.ERROR:
            self.new_connections.append((dev.phone.address, reply.error_name or "" if reply else "timeout"))
            at.detach()
            return False
        self.new_connections.append((dev.phone.address, "ok"))
        return True

    def _notify_profiles(self, dev: Any, uuids: set[str], *, connected: bool) -> None:
        if not connected and HFP_HF in uuids:
            at = self.at_phones.get(dev.phone.address)
            if at is not None:
                at.detach()
        super()._notify_profiles(dev, uuids, connected=connected)

    def hfp_profile_owner(self) -> str | None:
        for sender, path, uuid in self.profiles:
            if uuid == HFP_HF and path == "/bluetooth/profile/hfp_hf":
                return sender
        return None

    def drop_hfp(self, address: str) -> None:
        """The RFCOMM link drops (radio trouble); the ACL and the device stay."""
        dev = self._dev(address)
        dev.profiles.discard(HFP_HF)
        at = self.at_phones.get(dev.phone.address)
        if at is not None:
            at.detach()


class Ofonod(RealProcess):
    """The real ofonod, ``-n`` (no daemon), on the given bus; log in ``log_path``."""

    def __init__(self, bus_address: str, log_path: Path) -> None:
        self.bus_address = bus_address
        super().__init__(log_path)
        self.starts = 0

    async def start(self, bluez: HfpBluez, timeout: float = START_DEADLINE_S) -> None:
        """Start and wait until it registered its hands-free profile with (fake) bluetoothd."""
        before = bluez.hfp_profile_owner()
        self._log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - closed in stop(); a local file
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus_address, OFONO_AT_DEBUG="1")
        self.proc = await asyncio.create_subprocess_exec(
            ofonod_path(), "-n", "-d", "-p", OFONO_PLUGINS,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        proc = self.proc

        def registered() -> bool:
            if proc.returncode is not None:
                raise RuntimeError(f"ofonod exited with {proc.returncode}:\n{self.log()}")
            owner = bluez.hfp_profile_owner()
            return owner is not None and owner != before

        try:
            await bluez.wait_until(registered, timeout)
        except TimeoutError:
            raise RuntimeError(f"ofonod did not register its HFP profile within {timeout}s:\n{self.log()}") from None





class Dashboard:
    """A dashboard client of org.dashbridge.Calls1: calls it, collects its signals in order."""

    def __init__(self, bus: Any) -> None:
        from dashbridge.daemon.dbus import names

        self.bus = bus
        self.names = names
        self.signals: list[tuple[str, list[Any]]] = []
        self._event = asyncio.Event()
        bus.add_message_handler(self._on)

    async def subscribe(self) -> Dashboard:
        from dashbridge.daemon.dbus.call import call

        await call(self.bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch",
                   "s", [f"type='signal',sender='{self.names.DASHBRIDGE_NAME}',"
                         f"interface='{self.names.DASHBRIDGE_CALLS_IFACE}'"])
        return self

    def _on(self, msg: Message) -> None:
        from dashbridge.daemon.dbus.call import unwrap

        if msg.message_type == MessageType.SIGNAL and msg.interface == self.names.DASHBRIDGE_CALLS_IFACE:
            self.signals.append((msg.member or "", unwrap(list(msg.body))))
            self._event.set()

    def mark(self) -> int:
        return len(self.signals)

    async def wait(self, member: str, pred: Any = lambda b: True, *, after: int = 0,
                   timeout: float = 10.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while True:
                for name, body in self.signals[after:]:
                    if name == member and pred(body):
                        return body
                self._event.clear()
                await self._event.wait()

    async def api(self, member: str, signature: str = "", body: list[Any] | None = None) -> list[Any]:
        from dashbridge.daemon.dbus.call import call, unwrap

        out = await call(self.bus, self.names.DASHBRIDGE_NAME, self.names.DASHBRIDGE_PATH,
                         self.names.DASHBRIDGE_CALLS_IFACE, member, signature, body or [], timeout=15)
        return list(unwrap(out))

    async def state(self, call_id: str, state: str, *, after: int = 0, timeout: float = 10.0) -> dict[str, Any]:
        body = await self.wait("CallChanged", lambda b: b[0] == call_id and b[1]["State"] == state, after=after,
                               timeout=timeout)
        return dict(body[1])
