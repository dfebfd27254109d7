"""The foreign D-Bus names the fakes serve, spelled here on their own (from the BlueZ, obexd and
oFono documentation), never imported from the daemon: a typo in ``daemon/dbus/names.py`` must make
the daemon miss the fake, not be copied into the fake as well.  Import-linter keeps it that way
(the contract "The simulator's fakes spell foreign names themselves" in pyproject.toml)."""

from typing import Final

# freedesktop
DBUS_NAME: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"
PROPERTIES: Final = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER: Final = "org.freedesktop.DBus.ObjectManager"
INTROSPECTABLE: Final = "org.freedesktop.DBus.Introspectable"
PEER: Final = "org.freedesktop.DBus.Peer"
E_UNKNOWN_METHOD: Final = "org.freedesktop.DBus.Error.UnknownMethod"
E_UNKNOWN_OBJECT: Final = "org.freedesktop.DBus.Error.UnknownObject"
E_INVALID_ARGS: Final = "org.freedesktop.DBus.Error.InvalidArgs"
E_READ_ONLY: Final = "org.freedesktop.DBus.Error.PropertyReadOnly"

# bluetoothd (doc/org.bluez.*.rst)
BLUEZ: Final = "org.bluez"
BLUEZ_ROOT: Final = "/org/bluez"
AGENT_MANAGER: Final = "org.bluez.AgentManager1"
PROFILE_MANAGER: Final = "org.bluez.ProfileManager1"
ADAPTER: Final = "org.bluez.Adapter1"
DEVICE: Final = "org.bluez.Device1"
AGENT: Final = "org.bluez.Agent1"
PROFILE: Final = "org.bluez.Profile1"
GATT_SERVICE: Final = "org.bluez.GattService1"
GATT_CHAR: Final = "org.bluez.GattCharacteristic1"
BLUEZ_ERR: Final = "org.bluez.Error."
BLUEZ_REASON: Final = "org.bluez.Reason."

# obexd (doc/org.bluez.obex.*.rst)
OBEX: Final = "org.bluez.obex"
OBEX_ROOT: Final = "/org/bluez/obex"
OBEX_CLIENT: Final = "org.bluez.obex.Client1"
OBEX_SESSION: Final = "org.bluez.obex.Session1"
OBEX_TRANSFER: Final = "org.bluez.obex.Transfer1"
OBEX_PHONEBOOK: Final = "org.bluez.obex.PhonebookAccess1"
OBEX_MESSAGE_ACCESS: Final = "org.bluez.obex.MessageAccess1"
OBEX_MESSAGE: Final = "org.bluez.obex.Message1"
OBEX_SESSION_PREFIX: Final = "/org/bluez/obex/client/session"
OBEX_ERR: Final = "org.bluez.obex.Error."

# ofonod (doc/*-api.txt)
OFONO: Final = "org.ofono"
OFONO_MANAGER: Final = "org.ofono.Manager"
OFONO_MODEM: Final = "org.ofono.Modem"
OFONO_VOICECALL_MANAGER: Final = "org.ofono.VoiceCallManager"
OFONO_VOICECALL: Final = "org.ofono.VoiceCall"
OFONO_HANDSFREE: Final = "org.ofono.Handsfree"
OFONO_NETREG: Final = "org.ofono.NetworkRegistration"
OFONO_CALLVOLUME: Final = "org.ofono.CallVolume"
OFONO_ERR: Final = "org.ofono.Error."

# the simulator's own control interfaces
SIM_PATH: Final = "/org/dashbridge/sim"
SIM_ERR: Final = "org.dashbridge.Sim.Error."
