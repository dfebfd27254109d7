"""Pure rules of the bluetooth component: names, addresses, UUIDs, roles, error classification."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dashbridge.daemon.bluetooth.model import (
    MAX_NAME_BYTES,
    assign_roles,
    classify_connect_error,
    classify_pair_error,
    clean_name,
    format_passkey,
    looks_like_phone,
    normalize_address,
    parse_passkey,
    parse_pin,
    profiles_of,
    valid_uuids,
)

HFP_AG = "0000111f-0000-1000-8000-00805f9b34fb"


def test_names_lose_control_and_bidi_characters() -> None:
    assert clean_name("Ada\x1b[31m\u202e phone\n\t", "AA:BB:CC:DD:EE:01") == "Ada [31m phone"
    assert clean_name("soft\xadhyphen\u00a0nbsp") == "softhyphen nbsp"
    assert clean_name("family \U0001f468\u200d\U0001f469") == "family \U0001f468\u200d\U0001f469"
    assert clean_name("  two   spaces ") == "two spaces"


def test_empty_or_wrong_type_names_fall_back_to_the_address() -> None:
    assert clean_name("", "AA:BB:CC:DD:EE:01") == "Phone EE:01"
    assert clean_name(None, "AA:BB:CC:DD:EE:01") == "Phone EE:01"
    assert clean_name(42, "") == "Phone"
    assert clean_name("\x00\x01\x02", "AA:BB:CC:DD:EE:01") == "Phone EE:01"


def test_names_are_cut_at_248_bytes_on_a_character_boundary() -> None:
    name = clean_name("é" * 300)
    assert len(name.encode()) <= MAX_NAME_BYTES and name == "é" * 124
    assert len(clean_name("x" * 1000).encode()) == MAX_NAME_BYTES


@given(st.text())
def test_any_name_is_cleaned_into_something_showable(raw: str) -> None:
    name = clean_name(raw, "AA:BB:CC:DD:EE:01")
    assert name and len(name.encode()) <= MAX_NAME_BYTES
    assert all(ch.isprintable() or ch in " \u200c\u200d" for ch in name)
    assert name == name.strip()


def test_addresses() -> None:
    assert normalize_address(" aa:bb:cc:dd:ee:0f ") == "AA:BB:CC:DD:EE:0F"
    for bad in ("", "AA:BB:CC:DD:EE", "AA-BB-CC-DD-EE-FF", "GG:BB:CC:DD:EE:FF", "AA:BB:CC:DD:EE:FF:00"):
        assert normalize_address(bad) is None


def test_uuids_unknown_and_malformed_are_dropped() -> None:
    uuids = valid_uuids([HFP_AG.upper(), "not-a-uuid", 7, "12345678-0000-1000-8000-00805f9b34fb"])
    assert uuids == {HFP_AG, "12345678-0000-1000-8000-00805f9b34fb"}
    assert profiles_of(uuids) == ["hfp"]
    assert valid_uuids("0000111f-0000-1000-8000-00805f9b34fb") == frozenset()


def test_looks_like_phone() -> None:
    assert looks_like_phone({"Class": 0x5A020C})
    assert looks_like_phone({"UUIDs": [HFP_AG]})
    assert not looks_like_phone({"Class": 0x240404, "UUIDs": ["0000110b-0000-1000-8000-00805f9b34fb"]})


def test_roles_by_priority_with_a_limit() -> None:
    assert assign_roles(["A", "B", "C"], 2) == ({"A": "primary", "B": "secondary"}, ["C"])
    assert assign_roles(["B"], 2) == ({"B": "primary"}, [])
    assert assign_roles([], 2) == ({}, [])


def test_passkeys_and_pins() -> None:
    assert format_passkey(42) == "000042"
    assert format_passkey(1_000_000) is None and format_passkey(-1) is None and format_passkey(True) is None
    assert parse_pin("0000") == "0000" and parse_pin("abc123") == "abc123"
    assert parse_pin("") is None and parse_pin("12 34") is None and parse_pin("x" * 17) is None
    assert parse_pin("١٢٣٤") is None  # non-ASCII digits
    assert parse_passkey("004711") == 4711 and parse_passkey("1234567") is None and parse_passkey("12a") is None


def test_connect_errors_are_classified_from_the_bluez_vocabulary() -> None:
    failed = "org.bluez.Error.Failed"
    assert classify_connect_error(failed, "br-connection-key-missing").reason == "key_missing"
    assert classify_connect_error(failed, "br-connection-page-timeout").reason == "out_of_range"
    assert classify_connect_error("org.bluez.Error.NotReady", "Resource Not Ready").reason == "adapter_off"
    assert classify_connect_error("org.bluez.Error.InProgress", "br-connection-busy").retry
    assert classify_connect_error("org.bluez.Error.BREDR.ProfileUnavailable", "").reason == "no_profiles"
    assert classify_connect_error(failed, "br-connection-canceled").reason == "canceled"
    assert not classify_connect_error(failed, "br-connection-key-missing").retry
    assert classify_connect_error(failed, "something new").reason == "failed"


def test_connect_errors_of_every_bluez_release_mean_the_same() -> None:
    failed = "org.bluez.Error.Failed"
    # 5.66-5.83: the reason string in Failed/NotAvailable; 5.84+: the BREDR.ProfileUnavailable name.
    for name, text in (("org.bluez.Error.NotAvailable", "br-connection-profile-unavailable"),
                       (failed, "br-connection-profile-unavailable"),
                       ("org.bluez.Error.BREDR.ProfileUnavailable", "No more profiles to connect to")):
        f = classify_connect_error(name, text)
        assert (f.reason, f.retry) == ("no_profiles", False), (name, text)
        assert f.message == "the phone offers no profile the car can connect (profile unavailable)"
    f = classify_connect_error(failed, "br-connection-page-timeout")
    assert f.retry and f.message == "the phone is out of range (page timeout)"
    f = classify_connect_error(failed, "br-connection-sdp-search")
    assert (f.reason, f.retry) == ("sdp_failed", True)
    assert classify_connect_error(failed, "le-connection-abort-by-local").reason == "canceled"
    assert classify_connect_error(failed, "le-connection-gatt-browsing").reason == "sdp_failed"
    assert classify_connect_error(failed, "br-connection-refused").retry is False
    assert classify_connect_error(failed, "br-connection-concurrent-connection-limit").reason == "too_many"
    assert classify_connect_error(failed, "br-connection-already-connected").reason == "already_connected"
    assert classify_connect_error("org.bluez.Error.NotAvailable", "").reason == "no_profiles"
    assert classify_connect_error(failed, "br-connection-unknown").message == "the connection failed (unknown)"


def test_pair_errors() -> None:
    assert classify_pair_error("org.bluez.Error.AuthenticationFailed", "") == "rejected"
    assert classify_pair_error("org.bluez.Error.AuthenticationCanceled", "") == "cancelled"
    assert classify_pair_error("org.bluez.Error.ConnectionAttemptFailed", "Page Timeout") == "out_of_range"
    assert classify_pair_error("org.example.Weird", "") == "failed"
