"""``AgentManager1`` and pairing: agents keyed by connection, the default-agent stack, one request per
agent under ``agent_timeout`` then ``Cancel()``; local ``Pair()`` and phone-initiated pairing."""

import asyncio
import contextlib
from typing import Any

from dbus_fast import Message, MessageType

from .core import BluezCore, BluezIface
from .model import (
    AGENT,
    DEVICE,
    Agent,
    AgentRequest,
    BluezError,
    Device,
    PhoneOutcome,
    parse_capability,
)


class AgentsPart(BluezCore):
    # ================================================================================================
    # AgentManager1 / ProfileManager1
    # ================================================================================================
    def _m_AgentManager1_RegisterAgent(self, msg: Message, obj: BluezIface) -> Message:
        path, capability = msg.body
        cap = parse_capability(capability)
        if cap is None:
            raise BluezError("InvalidArguments", "Invalid arguments in method call")
        sender = msg.sender or ""
        if sender in self._agents:
            raise BluezError("AlreadyExists", "Already Exists")
        self._agents[sender] = Agent(sender, path, cap)
        self._default_stack.append(sender)  # the first one is default; later ones queue behind
        self._default_agent_changed()
        self._bump()
        return Message.new_method_return(msg)

    def _m_AgentManager1_UnregisterAgent(self, msg: Message, obj: BluezIface) -> Message:
        (path,) = msg.body
        sender = msg.sender or ""
        agent = self._agents.get(sender)
        if agent is None or agent.path != path:
            raise BluezError("DoesNotExist", "Does Not Exist")
        del self._agents[sender]
        self._default_stack.remove(sender)
        self._default_agent_changed()
        self._bump()
        return Message.new_method_return(msg)

    def _m_AgentManager1_RequestDefaultAgent(self, msg: Message, obj: BluezIface) -> Message:
        (path,) = msg.body
        sender = msg.sender or ""
        agent = self._agents.get(sender)
        if agent is None or agent.path != path:
            raise BluezError("DoesNotExist", "Does Not Exist")
        self._default_stack.remove(sender)
        self._default_stack.insert(0, sender)
        self._default_agent_changed()
        self._bump()
        return Message.new_method_return(msg)

    def _default_agent_changed(self) -> None:
        """bluetoothd with ``AlwaysPairable=false`` (main.conf's default) makes the adapter bondable
        when a default agent is set and not bondable when the last one goes (src/agent.c set_io_cap ->
        src/adapter.c adapter_set_io_capability, 5.66..current): ``Pairable`` follows the agent.
        Pinned against the real bluetoothd 5.66 in tests/realbluez/test_bluez_fake_differences.py."""
        pairable = bool(self._default_stack)
        if self._adapter_state.get("Pairable") != pairable:
            self._set_adapter(Pairable=pairable)


    # -- pairing ------------------------------------------------------------------------------------
    def _passkey(self, dev: Device) -> int:
        if dev.phone.passkey is not None:
            return dev.phone.passkey % 1_000_000
        return (123456 + 271828 * next(self._passkeys)) % 1_000_000

    async def _agent_request(self, agent: Agent, member: str, sig: str, body: list[Any],
                             dev: Device) -> tuple[bool, list[Any]]:
        """One agent request: (accepted, reply body).  Timeout -> Cancel() and rejected."""
        if agent.busy:
            self.agent_log.append(AgentRequest(agent.sender, member, dev.path, tuple(body[1:]), "busy"))
            return False, []
        agent.busy = True
        outcome = "rejected"
        try:
            reply = await self._call(agent.sender, agent.path, AGENT, member, sig, body, self.t.agent_timeout)
            if reply is None:
                outcome = "timeout" if agent.sender in self._agents else "gone"
                if outcome == "timeout":
                    self._send_noreply(agent.sender, agent.path, AGENT, "Cancel")
                return False, []
            if reply.message_type == MessageType.ERROR:
                return False, []
            outcome = "accepted"
            return True, list(reply.body)
        except asyncio.CancelledError:
            outcome = "canceled"
            if self.running and agent.sender in self._agents:
                self._send_noreply(agent.sender, agent.path, AGENT, "Cancel")
            raise
        finally:
            agent.busy = False
            self.agent_log.append(AgentRequest(agent.sender, member, dev.path, tuple(body[1:]), outcome))
            self._bump()

    async def _authenticate(self, dev: Device, agent: Agent | None, *, remote: bool) -> str:
        """Run the SSP/legacy exchange; returns "" on success or the failure kind."""
        phone = dev.phone
        cap = agent.capability if agent else "NoInputNoOutput"
        if phone.pairing == "legacy_pin":
            if agent is None:
                return "no_agent"
            ok, body = await self._agent_request(agent, "RequestPinCode", "o", [dev.path], dev)
            if not ok:
                return "rejected"
            pin = body[0] if body else ""
            if not isinstance(pin, str) or not 1 <= len(pin) <= 16 or pin != phone.pin:
                return "phone_rejected"
            return ""
        if phone.pairing == "just_works" or cap == "NoInputNoOutput" or (cap == "DisplayOnly" and remote):
            if remote:
                if dev.paired:
                    return "rejected"  # JustWorksRepairing = never
                if agent is None:
                    return "no_agent"
                ok, _ = await self._agent_request(agent, "RequestAuthorization", "o", [dev.path], dev)
                if not ok:
                    return "rejected"
            # A locally initiated Pair() ending in just-works is auto-accepted without the agent.
        elif cap == "KeyboardOnly":
            passkey = self._passkey(dev)
            assert agent is not None
            ok, body = await self._agent_request(agent, "RequestPasskey", "o", [dev.path], dev)
            if not ok:
                return "rejected"
            if not body or body[0] != passkey:
                return "phone_rejected"
        elif cap == "DisplayOnly":
            assert agent is not None
            passkey = self._passkey(dev)
            self._send_noreply(agent.sender, agent.path, AGENT, "DisplayPasskey", "ouq", [dev.path, passkey, 0])
        else:
            assert agent is not None
            passkey = self._passkey(dev)
            ok, _ = await self._agent_request(agent, "RequestConfirmation", "ou", [dev.path, passkey], dev)
            if not ok:
                return "rejected"
        if self.t.phone_response_delay:
            await asyncio.sleep(self.t.phone_response_delay)
        if not phone.accepts_pairing:
            return "phone_rejected"
        if not phone.in_range:
            return "canceled"
        return ""

    async def _finish_pairing(self, dev: Device) -> None:
        """Bond stored, then service discovery.  A phone already bonded with the car (it pairs again
        after losing the car's key) gets a new link key and *no* property change (every release).

        * current (checked back to 5.7x): SDP first, then Paired/Bonded/UUIDs/ServicesResolved in one
          batch (§1.5, §8.9); when SDP fails, Paired/Bonded still come, without UUIDs or
          ServicesResolved.
        * 5.66: ``Bonded=true`` at once when the keys are stored; ``Paired`` with ``UUIDs`` and
          ``ServicesResolved`` only after SDP finished — never when it fails."""
        rebond = dev.paired
        dev.phone.bonded = True
        dev.paired = True
        if dev.temp_timer:
            dev.temp_timer.cancel()
            dev.temp_timer = None
        if rebond:
            self._bump()
            return
        old_release = not self.at_least(5, 67)
        if old_release:
            self._set(dev, Bonded=True)
            # device_set_paired: the value is true at once (Get/GetManagedObjects say so) but the
            # PropertiesChanged waits for SDP ("pending_paired") — and never comes if SDP fails.
            self._device_state(dev)["Paired"] = True
        await asyncio.sleep(self.t.sdp_delay)
        if self._sdp_fail(dev):
            if not old_release:
                self._set(dev, Paired=True, Bonded=True)
            return
        dev.services_known = True
        self._export_gatt(dev)
        self._set(dev, Paired=True, Bonded=True, UUIDs=list(dev.phone.uuids), ServicesResolved=True)
        if old_release and self._exported(dev) and self._server is not None:
            self._server.changed(dev.path, DEVICE, ["Paired"])  # the pending Paired signal, with the rest

    async def _local_pair(self, dev: Device, agent: Agent | None) -> None:
        dev.pairing_initiator = "local"
        st = self._device_state(dev)
        if not st.get("Connected"):
            try:
                await self._page(dev)
            except BluezError:
                raise BluezError("ConnectionAttemptFailed", "Page Timeout") from None
            self._set(dev, Connected=True)
        try:
            failure = await self._authenticate(dev, agent, remote=False)
        except asyncio.CancelledError:
            raise
        if failure:
            await self._drop_link(dev, "Authentication", "Authentication failure")
            if failure == "canceled":
                raise BluezError("AuthenticationCanceled", "Authentication Canceled")
            if failure == "busy":
                raise BluezError("AuthenticationRejected", "Authentication Rejected")
            raise BluezError("AuthenticationFailed", "Authentication Failed")
        await self._finish_pairing(dev)
        if not dev.services_known and self._sdp_fail(dev):
            # Pair() replies when the service search ends (src/device.c device_browse_sdp with the
            # bonding message): its failure is the reply although the bond is stored.
            raise BluezError("Failed", "br-connection-sdp-search")

    async def _remote_pair(self, dev: Device) -> PhoneOutcome:
        phone = dev.phone
        if not phone.in_range:
            return "not_found"
        known = self._exported(dev)
        if not known and not self._adapter_state["Discoverable"]:
            return "not_found"  # the phone cannot find a car that is not discoverable
        if not (self._adapter_state["Powered"] and self._connectable()):
            return "not_found"
        self._export_device(dev)
        dev.pairing_initiator = "remote"
        try:
            await asyncio.sleep(self.t.connect_delay)
            self._set(dev, Connected=True)
            if not self._adapter_state["Pairable"]:
                failure = "rejected"
            else:
                agent = self._default()
                failure = "no_agent" if agent is None else await self._authenticate(dev, agent, remote=True)
        except asyncio.CancelledError:
            if dev.abort != "restart":
                with contextlib.suppress(Exception):
                    await self._drop_link(dev, "Local", "Connection terminated by local host")
            raise
        if failure:
            await self._drop_link(dev, "Authentication", "Authentication failure")
            self._arm_temporary(dev)
            return failure
        try:
            await self._finish_pairing(dev)
        except asyncio.CancelledError:
            if not dev.paired or dev.abort == "restart":
                raise
            # The link went (e.g. the car disconnected it) during service discovery: the bond is
            # stored already, so the phone is paired; SDP just did not finish.
            return "paired"
        dev.op = None
        self._spawn(self._incoming_profiles(dev))
        return "paired"


    async def call_default_agent(self, member: str, signature: str = "", body: list[Any] | None = None, *,
                                 timeout: float | None = None) -> tuple[bool, list[Any] | str]:
        """Fault injection: send an arbitrary request from bluetoothd's own connection to the default
        agent (bad passkeys, unknown devices, duplicates...).  (True, body) or (False, error name)."""
        agent = self._default()
        if agent is None:
            raise RuntimeError("no default agent registered")
        reply = await self._call(agent.sender, agent.path, AGENT, member, signature, body or [],
                                 self.t.agent_timeout if timeout is None else timeout)
        if reply is None:
            return False, "timeout"
        if reply.message_type == MessageType.ERROR:
            return False, reply.error_name or ""
        return True, list(reply.body)

    def send_agent_cancel(self) -> None:
        """bluetoothd voids the outstanding request (the phone gave up)."""
        agent = self._default()
        if agent is not None:
            self._send_noreply(agent.sender, agent.path, AGENT, "Cancel")
