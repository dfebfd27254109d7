"""A fake ``org.bluez`` (bluetoothd) on a private system bus, faithful enough that the daemon cannot
tell it from the real one (reference ../shared/reference/bluez-obex-ofono-api.md §1, §7 items 1-10).

What it reproduces (and python-dbusmock's bluez5 template does not, reference §9.1):

* ObjectManager at ``/``; ``AgentManager1`` + ``ProfileManager1`` at ``/org/bluez``; one adapter
  ``/org/bluez/hciN``; devices ``dev_XX_XX_..``.  Property changes, interface additions and removals
  are batched and flushed once per loop iteration like gdbus (§0.1): several changes to one
  interface arrive as ONE ``PropertiesChanged`` with the current values; changes to a not-yet
  announced interface are folded into its ``InterfacesAdded``; pending changes are flushed before
  ``InterfacesRemoved``; add+remove in one iteration emits nothing.
* Agents keyed by D-Bus *connection* (one each, ``AlreadyExists`` otherwise), capability
  prefix-matching, a stack of default agents with promotion when the default leaves, one
  outstanding request per agent, ``agent_timeout`` (60 s like ``REQUEST_TIMEOUT``) then
  ``Cancel()``, any error reply = rejection, ``Release`` only on a clean simulated shutdown.
* Remote-initiated pairing asks the *default* agent (after ``Connected=true``); a local ``Pair()``
  asks the caller's agent (else the default one), auto-accepts just-works, and replies only after
  service discovery (``Failed br-connection-sdp-search`` when it fails, though bonded);
  ``Paired``/``Bonded``/``UUIDs``/``ServicesResolved`` change together after SDP — on 5.66
  ``Bonded`` at once and ``Paired`` signalled after SDP or never; a bonded phone pairing again
  changes nothing.
* The BlueZ release to emulate: ``FakeBluez(version="5.66" | "current")`` or
  ``$DASHBRIDGE_SIM_BLUEZ_VERSION`` (what each release differs in: ``model.py``, the
  ``*_SINCE`` tables; docs/architecture.md lists them).
* ``AuthorizeService(dev, uuid)`` for every incoming profile connection from an untrusted device;
  no default agent means rejected.
* ``Connect()`` on a connected device succeeds, ``Disconnect()`` on a disconnected one succeeds and
  cancels a pending ``Connect`` (``br-connection-canceled``) or ``Pair`` (``AuthenticationCanceled``);
  ``Failed br-connection-page-timeout`` out of range, ``br-connection-key-missing`` when the phone
  forgot the bond, ``NotReady`` with the adapter off.
* ``RegisterProfile`` rules (``AlreadyExists`` same sender+path, ``NotPermitted`` "UUID already
  registered") and ``Profile1.NewConnection(device, fd, props)`` with one end of a socketpair when
  a phone connects that profile (the other end is kept for the fake phone side:
  :meth:`FakeBluez.profile_socket`).
* Discovery sessions per client connection; ``RSSI`` invalidated when discovery stops; temporary
  devices removed ``temporary_timeout`` after they were last seen.
* A simulated bluetoothd restart: the connection (and so the name) is dropped, every object,
  agent, profile and discovery session is forgotten, then a new connection owns ``org.bluez``
  again and re-announces the objects (paired devices stay paired).

The package, one concern a module: ``model`` (names, UUIDs, timings, records), ``core`` (state,
life cycle, world API, plumbing), ``adapter``, ``devices``, ``agents`` (and pairing), ``profiles``,
``gatt``, ``control`` (``org.dashbridge.Sim.Bluez1``), ``fake`` (:class:`FakeBluez` from the parts);
the D-Bus objects are served by the simulator's one fake object server (``simulator/fakebus.py``).

Control: the Python API of :class:`FakeBluez` (used in-process by tests and the scenario runner),
and ``org.dashbridge.Sim.Bluez1`` at ``/org/dashbridge/sim`` owned as ``org.dashbridge.Sim.Bluez``
on a separate connection that survives simulated restarts.

Timings are :class:`BluezTimings`; the defaults are bluetoothd's (60 s agent timeout, 5.12 s page
timeout, 30 s temporary devices) and :meth:`BluezTimings.fast` is for tests.
"""

from .control import BluezControl
from .core import BluezCore, BluezIface
from .fake import FakeBluez
from .model import (
    ADAPTER,
    AGENT,
    AGENT_MANAGER,
    BLUEZ,
    BUILTIN_PROFILES,
    CAPABILITIES,
    CONTROL_IFACE,
    CONTROL_NAME,
    CONTROL_PATH,
    DEVICE,
    GATT_CHAR,
    GATT_SERVICE,
    LOCAL_TO_REMOTE,
    PROFILE,
    PROFILE_MANAGER,
    ROOT,
    AgentRequest,
    BluezError,
    BluezTimings,
    DeviceCall,
    GattCharacteristic,
    GattService,
    PhoneOutcome,
    parse_capability,
    parse_uuid,
    uuid16,
)

__all__ = [
    "ADAPTER", "AGENT", "AGENT_MANAGER", "BLUEZ", "BUILTIN_PROFILES", "CAPABILITIES", "CONTROL_IFACE", "CONTROL_NAME",
    "CONTROL_PATH", "DEVICE", "GATT_CHAR", "GATT_SERVICE", "LOCAL_TO_REMOTE", "PROFILE", "PROFILE_MANAGER", "ROOT",
    "AgentRequest", "BluezControl", "BluezCore", "BluezError", "BluezIface", "BluezTimings", "DeviceCall",
    "FakeBluez", "GattCharacteristic", "GattService", "PhoneOutcome", "parse_capability", "parse_uuid", "uuid16",
]
