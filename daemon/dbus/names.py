"""Every foreign and own D-Bus name the daemon uses, in one place (bleak's ``defs`` module idea).

Sources: ../shared/reference/bluez-obex-ofono-api.md §0-§4.
"""

from __future__ import annotations

from typing import Final

# --- freedesktop -------------------------------------------------------------------------------
DBUS_NAME: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"
DBUS_IFACE: Final = "org.freedesktop.DBus"
PROPERTIES_IFACE: Final = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER_IFACE: Final = "org.freedesktop.DBus.ObjectManager"
INTROSPECTABLE_IFACE: Final = "org.freedesktop.DBus.Introspectable"

ERR_UNKNOWN_METHOD: Final = "org.freedesktop.DBus.Error.UnknownMethod"
ERR_UNKNOWN_OBJECT: Final = "org.freedesktop.DBus.Error.UnknownObject"
ERR_UNKNOWN_INTERFACE: Final = "org.freedesktop.DBus.Error.UnknownInterface"
ERR_SERVICE_UNKNOWN: Final = "org.freedesktop.DBus.Error.ServiceUnknown"
ERR_NAME_HAS_NO_OWNER: Final = "org.freedesktop.DBus.Error.NameHasNoOwner"
ERR_NO_REPLY: Final = "org.freedesktop.DBus.Error.NoReply"
ERR_TIMEOUT: Final = "org.freedesktop.DBus.Error.Timeout"
ERR_ACCESS_DENIED: Final = "org.freedesktop.DBus.Error.AccessDenied"
ERR_INVALID_ARGS: Final = "org.freedesktop.DBus.Error.InvalidArgs"
ERR_DISCONNECTED: Final = "org.freedesktop.DBus.Error.Disconnected"

# --- BlueZ (system bus) --------------------------------------------------------------------------
BLUEZ_NAME: Final = "org.bluez"
BLUEZ_ROOT: Final = "/org/bluez"
BLUEZ_AGENT_MANAGER_IFACE: Final = "org.bluez.AgentManager1"
BLUEZ_PROFILE_MANAGER_IFACE: Final = "org.bluez.ProfileManager1"
BLUEZ_AGENT_IFACE: Final = "org.bluez.Agent1"
BLUEZ_PROFILE_IFACE: Final = "org.bluez.Profile1"
BLUEZ_ADAPTER_IFACE: Final = "org.bluez.Adapter1"
BLUEZ_DEVICE_IFACE: Final = "org.bluez.Device1"
BLUEZ_ERR: Final = "org.bluez.Error."
BLUEZ_ERR_REJECTED: Final = "org.bluez.Error.Rejected"
BLUEZ_ERR_CANCELED: Final = "org.bluez.Error.Canceled"
BLUEZ_ERR_FAILED: Final = "org.bluez.Error.Failed"
BLUEZ_ERR_IN_PROGRESS: Final = "org.bluez.Error.InProgress"
BLUEZ_ERR_NOT_READY: Final = "org.bluez.Error.NotReady"
BLUEZ_ERR_ALREADY_EXISTS: Final = "org.bluez.Error.AlreadyExists"
BLUEZ_ERR_DOES_NOT_EXIST: Final = "org.bluez.Error.DoesNotExist"
BLUEZ_ERR_INVALID_ARGUMENTS: Final = "org.bluez.Error.InvalidArguments"
BLUEZ_ERR_NOT_PERMITTED: Final = "org.bluez.Error.NotPermitted"
BLUEZ_ERR_AUTH_FAILED: Final = "org.bluez.Error.AuthenticationFailed"
BLUEZ_ERR_AUTH_CANCELED: Final = "org.bluez.Error.AuthenticationCanceled"
BLUEZ_ERR_AUTH_REJECTED: Final = "org.bluez.Error.AuthenticationRejected"
BLUEZ_ERR_AUTH_TIMEOUT: Final = "org.bluez.Error.AuthenticationTimeout"
BLUEZ_ERR_CONN_ATTEMPT_FAILED: Final = "org.bluez.Error.ConnectionAttemptFailed"
BLUEZ_ERR_PROFILE_UNAVAILABLE: Final = "org.bluez.Error.BREDR.ProfileUnavailable"

# Bluetooth service UUIDs (phone side as in Device1.UUIDs, car side for our own profiles)
UUID_HFP_AG: Final = "0000111f-0000-1000-8000-00805f9b34fb"
UUID_HFP_HF: Final = "0000111e-0000-1000-8000-00805f9b34fb"
UUID_HSP_AG: Final = "00001112-0000-1000-8000-00805f9b34fb"
UUID_A2DP_SOURCE: Final = "0000110a-0000-1000-8000-00805f9b34fb"
UUID_A2DP_SINK: Final = "0000110b-0000-1000-8000-00805f9b34fb"
UUID_AVRCP_TARGET: Final = "0000110c-0000-1000-8000-00805f9b34fb"
UUID_AVRCP_CONTROLLER: Final = "0000110e-0000-1000-8000-00805f9b34fb"
UUID_PBAP_PSE: Final = "0000112f-0000-1000-8000-00805f9b34fb"
UUID_PBAP_PCE: Final = "0000112e-0000-1000-8000-00805f9b34fb"
UUID_MAP_MAS: Final = "00001132-0000-1000-8000-00805f9b34fb"
UUID_MAP_MNS: Final = "00001133-0000-1000-8000-00805f9b34fb"
UUID_OPP: Final = "00001105-0000-1000-8000-00805f9b34fb"
UUID_PNP: Final = "00001200-0000-1000-8000-00805f9b34fb"

# --- obexd (session bus by default) ------------------------------------------------------------
OBEX_NAME: Final = "org.bluez.obex"
OBEX_ROOT: Final = "/org/bluez/obex"
OBEX_CLIENT_IFACE: Final = "org.bluez.obex.Client1"
OBEX_SESSION_IFACE: Final = "org.bluez.obex.Session1"
OBEX_TRANSFER_IFACE: Final = "org.bluez.obex.Transfer1"
OBEX_PBAP_IFACE: Final = "org.bluez.obex.PhonebookAccess1"
OBEX_MAP_IFACE: Final = "org.bluez.obex.MessageAccess1"
OBEX_MESSAGE_IFACE: Final = "org.bluez.obex.Message1"
OBEX_ERR: Final = "org.bluez.obex.Error."
OBEX_ERR_FORBIDDEN: Final = "org.bluez.obex.Error.Forbidden"
OBEX_ERR_FAILED: Final = "org.bluez.obex.Error.Failed"
OBEX_ERR_INVALID_ARGUMENTS: Final = "org.bluez.obex.Error.InvalidArguments"
OBEX_ERR_NOT_AUTHORIZED: Final = "org.bluez.obex.Error.NotAuthorized"
OBEX_ERR_NOT_SUPPORTED: Final = "org.bluez.obex.Error.NotSupported"

# --- oFono (system bus; no ObjectManager) ------------------------------------------------------
OFONO_NAME: Final = "org.ofono"
OFONO_MANAGER_IFACE: Final = "org.ofono.Manager"
OFONO_MODEM_IFACE: Final = "org.ofono.Modem"
OFONO_VOICECALL_MANAGER_IFACE: Final = "org.ofono.VoiceCallManager"
OFONO_VOICECALL_IFACE: Final = "org.ofono.VoiceCall"
OFONO_HANDSFREE_IFACE: Final = "org.ofono.Handsfree"
OFONO_NETREG_IFACE: Final = "org.ofono.NetworkRegistration"
OFONO_CALLVOLUME_IFACE: Final = "org.ofono.CallVolume"
OFONO_SIRI_IFACE: Final = "org.ofono.Siri"
OFONO_ERR: Final = "org.ofono.Error."
OFONO_ERR_NOT_IMPLEMENTED: Final = "org.ofono.Error.NotImplemented"
OFONO_ERR_INVALID_FORMAT: Final = "org.ofono.Error.InvalidFormat"
OFONO_ERR_FAILED: Final = "org.ofono.Error.Failed"
OFONO_ERR_INVALID_ARGUMENTS: Final = "org.ofono.Error.InvalidArguments"
OFONO_ERR_IN_PROGRESS: Final = "org.ofono.Error.InProgress"  # also what oFono's "busy" is called
OFONO_ERR_NOT_FOUND: Final = "org.ofono.Error.NotFound"
OFONO_ERR_NOT_AVAILABLE: Final = "org.ofono.Error.NotAvailable"
OFONO_ERR_NOT_SUPPORTED: Final = "org.ofono.Error.NotSupported"
OFONO_ERR_ACCESS_DENIED: Final = "org.ofono.Error.AccessDenied"
# oFono's hands-free unit registers this Profile1 object with bluetoothd (plugins/hfp_hf_bluez5.c)
OFONO_HFP_PROFILE_PATH: Final = "/bluetooth/profile/hfp_hf"

# --- our own API (system bus) --------------------------------------------------------------------
DASHBRIDGE_NAME: Final = "org.dashbridge"
DASHBRIDGE_PATH: Final = "/org/dashbridge"
DASHBRIDGE_DAEMON_IFACE: Final = "org.dashbridge.Daemon1"
DASHBRIDGE_PHONES_IFACE: Final = "org.dashbridge.Phones1"
# The daemon's pairing agent (org.bluez.Agent1), exported on its own system-bus connection.
DASHBRIDGE_AGENT_PATH: Final = "/org/dashbridge/agent"
DASHBRIDGE_CALLS_IFACE: Final = "org.dashbridge.Calls1"
DASHBRIDGE_CONTACTS_IFACE: Final = "org.dashbridge.Contacts1"
DASHBRIDGE_MESSAGES_IFACE: Final = "org.dashbridge.Messages1"
DASHBRIDGE_NAVIGATION_IFACE: Final = "org.dashbridge.Navigation1"
DASHBRIDGE_CLOUD_IFACE: Final = "org.dashbridge.Cloud1"
# Only exported with DASHBRIDGE_CLOUD_TEST_CLOCK=1 (simulated-time tests); never on a head unit.
DASHBRIDGE_CLOUD_TEST_CLOCK_IFACE: Final = "org.dashbridge.CloudTestClock1"

# Errors the API returns to dashboard callers (stable names, documented in docs/dbus-api.md).
DB_ERR_ACCESS_DENIED: Final = "org.dashbridge.Error.AccessDenied"
DB_ERR_INVALID_ARGS: Final = "org.dashbridge.Error.InvalidArguments"
DB_ERR_NOT_FOUND: Final = "org.dashbridge.Error.NotFound"
DB_ERR_NOT_CONNECTED: Final = "org.dashbridge.Error.NotConnected"
DB_ERR_NOT_READY: Final = "org.dashbridge.Error.NotReady"
DB_ERR_FAILED: Final = "org.dashbridge.Error.Failed"
DB_ERR_TIMEOUT: Final = "org.dashbridge.Error.Timeout"
DB_ERR_BUSY: Final = "org.dashbridge.Error.Busy"
DB_ERR_INTERNAL: Final = "org.dashbridge.Error.Internal"


def device_path(adapter_path: str, address: str) -> str:
    """``/org/bluez/hci0`` + ``AA:BB:..`` -> ``/org/bluez/hci0/dev_AA_BB_..`` (src/device.c)."""
    return f"{adapter_path}/dev_{address.upper().replace(':', '_')}"


def address_from_device_path(path: str) -> str | None:
    """Inverse of :func:`device_path`; ``None`` for a path that is not a device."""
    last = path.rsplit("/", 1)[-1]
    if not last.startswith("dev_"):
        return None
    parts = last[4:].split("_")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        return None
    try:
        for p in parts:
            int(p, 16)
    except ValueError:
        return None
    return ":".join(parts).upper()
