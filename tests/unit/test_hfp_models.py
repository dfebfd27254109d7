"""Pure HFP models: number/tone validation, oFono property parsing (total: never raises on
whatever oFono or a phone sends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashbridge.profiles.hfp.models import (
    MAX_NUMBER_DIGITS,
    Call,
    InvalidNumber,
    InvalidTones,
    PhoneStatus,
    apply_modem_change,
    direction_for,
    display_name,
    normalize_dial_number,
    normalize_tones,
    parse_call_props,
    parse_modem_props,
    parse_start_time,
)


@pytest.mark.parametrize(("raw", "dialled"), [
    ("5551234", "5551234"),
    ("+44 20 7946 0958", "+442079460958"),
    ("+44 (20) 7946-0958", "+442079460958"),
    ("030/1234.567", "0301234567"),
    ("*31#0123", "*31#0123"),
    ("\u00a0112", "112"),
    ("1" * MAX_NUMBER_DIGITS, "1" * MAX_NUMBER_DIGITS),
    ("+" + "1" * MAX_NUMBER_DIGITS, "+" + "1" * MAX_NUMBER_DIGITS),
])
def test_dial_numbers_accepted(raw: str, dialled: str) -> None:
    assert normalize_dial_number(raw) == dialled


@pytest.mark.parametrize("raw", [
    "", "  ", "+", "call mum", "12ab34", "0800-FLOWERS", "1" * 200, "1" * (MAX_NUMBER_DIGITS + 1),
    "++44", "44+1", "12;34", "12,34", "12\n34", "12\t34", "１２３",  # full-width digits
    "p123", "123w",
])
def test_dial_numbers_rejected(raw: str) -> None:
    with pytest.raises(InvalidNumber) as exc:
        normalize_dial_number(raw)
    assert str(exc.value)


def test_dial_number_not_a_string() -> None:
    with pytest.raises(InvalidNumber):
        normalize_dial_number(1234)  # type: ignore[arg-type]


@given(st.text(max_size=300))
def test_dial_number_is_total_and_only_yields_what_ofono_accepts(raw: str) -> None:
    try:
        out = normalize_dial_number(raw)
    except InvalidNumber:
        return
    body = out[1:] if out.startswith("+") else out
    assert 1 <= len(body) <= MAX_NUMBER_DIGITS
    assert all(c in "0123456789*#" for c in body)


def test_tones() -> None:
    assert normalize_tones("12#*abcd") == "12#*ABCD"
    assert normalize_tones("1 2 p 3") == "12p3"
    assert normalize_tones("1P2") == "1p2"
    for bad in ("", " ", "12x", "E", "1" * 65, "١"):
        with pytest.raises(InvalidTones):
            normalize_tones(bad)


@given(st.text(max_size=100))
def test_tones_total(raw: str) -> None:
    try:
        out = normalize_tones(raw)
    except InvalidTones:
        return
    assert out and all(c in "0123456789*#ABCDp" for c in out)


def test_start_time_is_ofono_local_time_with_offset() -> None:
    t = parse_start_time("2024-05-01T12:34:56+0200")
    assert t == datetime(2024, 5, 1, 10, 34, 56, tzinfo=UTC).timestamp()
    assert parse_start_time("2024-05-01T12:34:56") == datetime(2024, 5, 1, 12, 34, 56).timestamp()
    for bad in ("", "yesterday", None, 17, "2024-13-01T00:00:00+0000"):
        assert parse_start_time(bad) is None


def test_call_props_parsing_drops_wrong_types() -> None:
    p = parse_call_props({"State": "active", "LineIdentification": "123", "Name": "ACME",
                          "StartTime": "2024-05-01T12:00:00+0000", "Multiparty": True, "Emergency": False})
    assert (p.state, p.line_id, p.name, p.multiparty, p.emergency) == ("active", "123", "ACME", True, False)
    assert p.start_time == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    bad = parse_call_props({"State": 3, "LineIdentification": ["x"], "Name": None, "Multiparty": "yes",
                            "StartTime": 5})
    assert bad == parse_call_props({})
    assert parse_call_props("nonsense") == parse_call_props({})
    assert parse_call_props({"State": "exploded"}).state is None


values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                   st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers()))


@given(st.dictionaries(st.sampled_from(["State", "LineIdentification", "Name", "StartTime", "Multiparty",
                                        "Emergency", "RemoteHeld", "x"]), values))
def test_call_props_total(props: dict[str, Any]) -> None:
    p = parse_call_props(props)
    c = Call("call1", "AA:BB:CC:DD:EE:FF", "/p", "incoming", "incoming").with_props(p)
    assert c.state in ("incoming", "waiting", "dialing", "alerting", "active", "held", "disconnected")
    assert isinstance(c.number, str)


def test_call_apply_one_property() -> None:
    c = Call("call1", "AA:BB:CC:DD:EE:FF", "/p", "dialing", "outgoing", number="123")
    assert c.apply("State", "alerting").state == "alerting"
    assert c.apply("State", "bogus") is c
    assert c.apply("Unknown", 1) is c
    assert c.apply("LineIdentification", "456").number == "456"


def test_modem_props() -> None:
    m = parse_modem_props({"Powered": True, "Online": True, "Serial": "aa:bb:cc:dd:ee:ff", "Type": "hfp",
                           "Name": "Pixel", "Interfaces": ["org.ofono.VoiceCallManager", 3]})
    assert m.address == "AA:BB:CC:DD:EE:FF"
    assert m.interfaces == frozenset({"org.ofono.VoiceCallManager"})
    assert parse_modem_props({"Serial": "not-an-address"}).address == ""
    assert parse_modem_props(None).powered is False
    assert apply_modem_change(m, "Powered", False).powered is False
    assert apply_modem_change(m, "Powered", "no") is m
    assert apply_modem_change(m, "Interfaces", []).interfaces == frozenset()
    assert apply_modem_change(m, "Interfaces", "x") is m


@given(st.dictionaries(st.sampled_from(["Powered", "Online", "Serial", "Name", "Type", "Interfaces", "y"]),
                       values), st.sampled_from(["Powered", "Online", "Serial", "Name", "Interfaces", "z"]), values)
def test_modem_props_total(props: dict[str, Any], name: str, value: Any) -> None:
    m = apply_modem_change(parse_modem_props(props), name, value)
    assert isinstance(m.powered, bool) and isinstance(m.address, str)


def test_phone_status_scaling_and_clamping() -> None:
    st0 = PhoneStatus("AA:BB:CC:DD:EE:FF")
    assert (st0.signal, st0.battery) == (-1, -1)
    s = st0.with_handsfree({"BatteryChargeLevel": 3, "InbandRinging": True, "Features": ["three-way-calling", 1]})
    assert (s.battery, s.inband_ringing, s.features) == (60, True, ("three-way-calling",))
    s = s.with_handsfree({"BatteryChargeLevel": 200})
    assert s.battery == 100
    s = s.with_netreg({"Strength": 60, "Name": "Op", "Status": "roaming"})
    assert (s.signal, s.operator, s.registration) == (60, "Op", "roaming")
    assert s.with_netreg({"Strength": True, "Name": 3}) == s


def test_display_name_order() -> None:
    assert display_name("Mum", "ACME", "123") == ("Mum", "contacts")
    assert display_name(None, "ACME", "123") == ("ACME", "network")
    assert display_name(None, "withheld", "123") == ("123", "number")
    assert display_name("", "", "withheld") == ("withheld", "number")
    assert display_name(None, "", "") == ("", "")


def test_direction_from_first_state() -> None:
    assert direction_for("incoming") == direction_for("waiting") == "incoming"
    assert direction_for("dialing") == direction_for("alerting") == "outgoing"
    assert direction_for("active") == "unknown"


def test_start_time_round_trips_the_fake_format() -> None:
    import time

    now = int(time.time())
    text = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
    assert parse_start_time(text) == now
    east = datetime.fromtimestamp(now, timezone(timedelta(hours=5, minutes=30)))
    assert parse_start_time(east.strftime("%Y-%m-%dT%H:%M:%S%z")) == now


def test_modem_address_from_path_when_there_is_no_serial() -> None:
    # Real oFono 1.31: an unpowered HFP modem has no Serial; its path names the BlueZ device.
    path = "/hfp/org/bluez/hci0/dev_AA_BB_CC_DD_EE_0F"
    m = parse_modem_props({"Type": "hfp", "Powered": False}, path)
    assert m.address == "AA:BB:CC:DD:EE:0F"
    assert parse_modem_props({"Serial": "11:22:33:44:55:66"}, path).address == "11:22:33:44:55:66"
    assert parse_modem_props({}, "/ril_0").address == ""
    assert parse_modem_props({}, "/hfp/dev_nope").address == ""
    assert apply_modem_change(m, "Powered", True).address == "AA:BB:CC:DD:EE:0F"
