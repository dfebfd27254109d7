"""A D-Bus client run as another Unix user (``setpriv``) by the authorization tests.

Reads a JSON list of calls from stdin — ``{"path", "interface" (or null: no interface header),
"member", "signature", "body" (optional; a default value for the signature wherever it is null)}`` — sends
each to ``org.dashbridge`` and prints one JSON list: for each call, ``"ok"`` or the error name.
Standard library and dbus-fast only: it runs with the venv's interpreter but not our packages.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from dbus_fast import Message, MessageType, SignatureTree, Variant
from dbus_fast.aio import MessageBus


def default(code: str) -> Any:
    t = SignatureTree(code).types[0]
    return _default(t)


def _default(t: Any) -> Any:
    c = t.token
    if c in "sg":
        return ""
    if c == "o":
        return "/"
    if c == "b":
        return False
    if c == "d":
        return 0.0
    if c in "ynqiuxth":
        return 0
    if c == "v":
        return Variant("s", "")
    if c == "a":
        return {} if t.children[0].token == "{" else []
    if c == "(":
        return [_default(ch) for ch in t.children]
    raise ValueError(f"no default for {c}")


async def main() -> None:
    address, calls = sys.argv[1], json.load(sys.stdin)
    bus = await MessageBus(bus_address=address).connect()
    out: list[str] = []
    for c in calls:
        sig = c.get("signature", "")
        types = SignatureTree(sig).types
        given = c.get("body") or [None] * len(types)
        body = [_default(t) if v is None else v for t, v in zip(types, given, strict=True)]
        msg = Message(destination="org.dashbridge", path=c["path"], interface=c.get("interface"),
                      member=c["member"], signature=sig, body=body)
        try:
            reply = await asyncio.wait_for(bus.call(msg), 10.0)
        except TimeoutError:
            out.append("timeout")
            continue
        assert reply is not None
        out.append("ok" if reply.message_type == MessageType.METHOD_RETURN else str(reply.error_name))
    bus.disconnect()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
