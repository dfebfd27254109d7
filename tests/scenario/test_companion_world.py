"""The companion app in the world, the shell and scenario files: leases signed like the backend's
documents (or deliberately not), destinations from the shell, ``companion:`` phones, the steps."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dashbridge.simulator.companion import SERVICE_UUID, CompanionApp
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.scenario import ACTIONS, ScenarioError, loads
from dashbridge.simulator.shell import LoopThread, SimShell
from dashbridge.simulator.world import World, WorldSpec

ALICE = "AA:BB:CC:00:0C:11"
STRANGER = "AA:BB:CC:00:0C:12"


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(jws: str) -> dict[str, Any]:
    return dict(json.loads(_b64d(jws.split(".")[1])))


def verifies(jws: str, anchors: dict[str, str]) -> bool:
    h, p, s = jws.split(".")
    kid = json.loads(_b64d(h))["kid"]
    key = Ed25519PublicKey.from_public_bytes(_b64d(anchors[kid]))
    try:
        key.verify(_b64d(s), f"{h}.{p}".encode())
    except InvalidSignature:
        return False
    return True


@pytest.fixture
def world_shell() -> Iterator[tuple[World, SimShell, io.StringIO]]:
    lt = LoopThread()
    spec = WorldSpec(phones=[VirtualPhone(ALICE, name="Alice", bonded=True, companion=CompanionApp()),
                             VirtualPhone(STRANGER, name="Stranger", discoverable=False, companion=CompanionApp())],
                     daemon=False, fakes=("bluez", "backend"))
    world = World(spec)
    lt.run(world.start(), timeout=60)
    out = io.StringIO()
    shell = SimShell(lt, world, stdout=out)
    try:
        yield world, shell, out
    finally:
        lt.run(world.stop(), timeout=60)
        lt.close()


def test_shell_verbs_drive_the_app(world_shell: tuple[World, SimShell, io.StringIO]) -> None:
    world, shell, out = world_shell
    app = world.phone("Alice").companion
    shell.onecmd("companion Alice send-destination \"Grandma's\" 51.50135 -0.14189 --id g1")
    shell.onecmd('companion Alice send-destination Dentist --address "12 High Street, Bath BA1 1AA"')
    assert [d.to_json().get("lat") for d in app.destinations] == [51.50135, None]
    assert app.destinations[0].id == "g1" and app.destinations[1].address == "12 High Street, Bath BA1 1AA"
    shell.onecmd("companion Alice send-destination Nowhere")
    assert "usage: companion PHONE" in out.getvalue()

    backend = world.fake("backend")
    anchors = backend.trust_anchors()
    held = backend.vehicles[world.vehicle_id].ent_version
    shell.onecmd("companion Alice lease")
    lease = app.lease.decode()
    assert verifies(lease, anchors)
    assert claims_of(lease)["version"] == held + 1 and claims_of(lease)["vehicle_id"] == world.vehicle_id
    assert backend.vehicles[world.vehicle_id].ent_jws == lease  # the very document the backend serves
    shell.onecmd("companion Alice lease --version 1")
    assert claims_of(app.lease.decode())["version"] == 1 and verifies(app.lease.decode(), anchors)
    shell.onecmd("companion Alice lease --forged")
    assert not verifies(app.lease.decode(), anchors)
    shell.onecmd("companion Alice lease --vehicle WDB0000000OTHER01")
    assert claims_of(app.lease.decode())["vehicle_id"] == "WDB0000000OTHER01"
    shell.onecmd("companion Alice lease --expired")
    c = claims_of(app.lease.decode())
    assert c["not_after"] < world.now() and verifies(app.lease.decode(), anchors)
    shell.onecmd("companion Alice lease --empty")
    assert app.lease == b""

    out.truncate(0)
    shell.onecmd("companion Alice status")
    assert "g1" in out.getvalue() and "lease_bytes: 0" in out.getvalue()
    shell.onecmd("companion Alice stop")
    assert SERVICE_UUID not in world.fake("bluez").device_props(ALICE)["UUIDs"]
    shell.onecmd("companion Alice start")
    assert SERVICE_UUID in world.fake("bluez").device_props(ALICE)["UUIDs"]


def test_shell_le_connect_of_an_unbonded_phone(world_shell: tuple[World, SimShell, io.StringIO]) -> None:
    world, shell, out = world_shell
    bluez = world.fake("bluez")
    assert bluez.device_props(STRANGER) is None  # not discoverable, no scan: bluetoothd has not seen it
    shell.onecmd("le_connect Stranger")
    assert "LE link up" in out.getvalue()
    props = bluez.device_props(STRANGER)
    assert props["Connected"] and props["ServicesResolved"] and not props["Paired"] and not props["Bonded"]
    assert props["UUIDs"] == [SERVICE_UUID]


def test_scenario_companion_phone_key_and_steps() -> None:
    for name in ("companion_send_destination", "companion_lease", "companion_app", "le_connect",
                 "expect_companion"):
        assert ("phone", name) in ACTIONS
    sc = loads("""version: 1
name: companion
world:
  phones:
    - id: alice
      name: Alice
      address: "AA:BB:CC:DD:EE:01"
      companion: {version: "2.1", serve: [version, destinations, ack], max_chunk: 40,
                  destinations: [{label: Home, lat: 1.5, lon: 2.5, id: h1}]}
    - {id: bob, name: Bob, address: "AA:BB:CC:DD:EE:02", companion: true}
steps:
  - phone: alice
    do: companion_send_destination
    label: Dentist
    address: 12 High Street
    id: d2
  - phone: alice
    do: companion_lease
    version: 3
    forged: true
  - phone: bob
    do: le_connect
  - phone: alice
    do: expect_companion
    acked: [h1, d2]
    within: 1s
""", "companion.yaml")
    alice = sc.phones[0].phone
    app = alice.companion
    assert isinstance(app, CompanionApp)
    assert app.version == (2, 1) and app.max_chunk == 40 and app.pending_ids == ["h1"]
    assert [u for u, _f in app.characteristics()][-1].endswith("0003-7d1c-4882-a633-a23288c78e12")
    assert isinstance(sc.phones[1].phone.companion, CompanionApp)
    assert [s.action for s in sc.steps] == ["companion_send_destination", "companion_lease", "le_connect",
                                            "expect_companion"]
    with pytest.raises(ScenarioError) as err:
        loads("""version: 1
name: x
world:
  phones:
    - {id: a, name: A, address: "AA:BB:CC:DD:EE:01", companion: {colour: red}}
steps: []
""", "x.yaml")
    assert "unknown key colour" in err.value.message


class _Run:
    """Just what the companion steps use of a scenario run."""

    def __init__(self, world: World, phone: VirtualPhone) -> None:
        self.w = world
        self._phone = phone
        self.saved: dict[str, Any] = {}
        self.sc = type("Sc", (), {"within": 1.0})()

    def phone(self, step: Any) -> VirtualPhone:
        return self._phone

    def within(self, step: Any) -> float:
        w = step.params.get("within")
        return float(w) if w is not None else float(self.sc.within)

    def subst(self, value: Any) -> Any:
        return value


def _step(action: str, **params: Any) -> Any:
    from dashbridge.simulator.scenario import Step

    act = ACTIONS[("phone", action)]
    full = {k: p.default for k, p in act.params.items()}
    full.update(params)
    return act.handler, Step(1, 1, "phone", action, full, phone="x")


def test_scenario_steps_run_against_the_world(world_shell: tuple[World, SimShell, io.StringIO]) -> None:
    from dashbridge.simulator.scenario import StepFailed

    world, shell, _out = world_shell
    lt = shell.lt
    alice = world.phone("Alice")
    run = _Run(world, alice)
    fn, step = _step("companion_send_destination", label="Home", lat=1.0, lon=2.0, id="h1", save="hid")
    lt.run(fn(run, step))
    assert run.saved["hid"] == "h1" and alice.companion.pending_ids == ["h1"]
    fn, step = _step("companion_lease", version=1)
    lt.run(fn(run, step))
    assert claims_of(alice.companion.lease.decode())["version"] == 1
    fn, step = _step("expect_companion", pending=["h1"], acked=[], within=0.2)
    lt.run(fn(run, step))
    fn, step = _step("expect_companion", acked=["h1"], within=0.2)
    with pytest.raises(StepFailed) as err:
        lt.run(fn(run, step))
    assert "acked" in str(err.value)
    stranger = _Run(world, world.phone("Stranger"))
    fn, step = _step("le_connect")
    lt.run(fn(stranger, step))
    assert world.fake("bluez").device_props(STRANGER)["ServicesResolved"]
