"""Messages and navigation intents (issue 6).

* ``map_notify_to_signal_p50_ms`` (and ``_p95_ms``): a new SMS reaches the simulated phone ->
  the fake obexd announces the MAP notification -> ``dashbridged`` (a separate process) lists it,
  downloads the bMessage through a Transfer1 and its temp file, parses, stores it in SQLite and
  emits ``Messages1.MessageReceived`` -> the dashboard client has the signal.  200 messages, one
  at a time, through the real daemon in the simulator world (fake BlueZ connected the phone).
  Floor ``map_notify_floor_ping_p50_ms``: one bare D-Bus round trip dashboard -> daemon
  (``Daemon1.Ping``) in the same world.  The notification path is ~6 bus messages between three
  processes (signal, ListMessages call+reply, Get call+reply, transfer signals, the final signal)
  plus a file and a transaction, so a handful of floors is the expected cost.
* ``nav_intent_extract_us``: microseconds per message to extract destinations from a corpus of
  1,000 generated messages (plain chat, every link kind, UK addresses, postcodes, noise).  Floor
  ``nav_intent_extract_floor_us``: the same texts scanned by one plain precompiled regex for
  link starts (``https?://|www.|geo:``) — the least any extractor must do.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time

from dashbridge.profiles.map.intents import extract
from dashbridge.simulator.phone import VirtualPhone

ADDR = "AA:BB:CC:DD:EE:01"
N_MESSAGES = 200
N_CORPUS = 1000


# -- notification -> signal -----------------------------------------------------------------------

async def _notify_latency() -> dict[str, float]:
    from dashbridge.simulator.world import World, WorldSpec

    phone = VirtualPhone(ADDR, name="Bench phone", bonded=True)
    spec = WorldSpec(phones=[phone], config={"log_level": "warning"})
    w = World(spec)
    await w.start()
    try:
        dash = w.dashboard
        assert dash is not None
        await dash.wait_for(lambda e: e.short == "Messages1.PropertiesChanged"
                            and e.named["changed"].get("Phones", {}).get(ADDR, [""])[0] in ("ready", "polling"),
                            30.0)
        pings = []
        for _ in range(200):
            t0 = time.perf_counter()
            await dash.call("Daemon1.Ping")
            pings.append(time.perf_counter() - t0)
        lat = []
        for i in range(N_MESSAGES):
            mark = dash.mark
            t0 = time.perf_counter()
            msg = w.deliver_message(ADDR, "SMS_GSM", f"+4477009{i:05d}", f"bench message {i} see geo:51.5,-0.{i:03d}")
            want = f"{ADDR}/{msg.handle}"
            await dash.wait_for(lambda e, want=want: e.short == "Messages1.MessageReceived"  # type: ignore[misc]
                                and e.named["message"]["id"] == want, 10.0, mark)
            lat.append(time.perf_counter() - t0)
    finally:
        await w.stop()
    lat.sort()
    return {
        "map_notify_to_signal_p50_ms": statistics.median(lat) * 1000,
        "map_notify_to_signal_p95_ms": lat[int(len(lat) * 0.95) - 1] * 1000,
        "map_notify_floor_ping_p50_ms": statistics.median(pings) * 1000,
    }


# -- intent extraction ----------------------------------------------------------------------------

_CHAT = ["ok see you soon", "Running 10 min late, sorry!", "Can you pick up milk on the way home?",
         "lol 😂😂", "Meeting moved to 3pm, room 4B", "Happy birthday!! 🎉", "call me when you can",
         "The kids are at school until 3:15, then football", "Flight BA123 lands at 18:40 T5"]
_LINKS = [
    "https://www.google.com/maps/place/Dishoom/@51.5136,-0.1265,17z/data=!3m1!4b1!4m6!3m5!3d51.5136!4d-0.1265",
    "https://maps.google.com/?q={lat},{lon}", "https://www.google.com/maps/@{lat},{lon},15z",
    "https://www.google.com/maps/search/?api=1&query=petrol+station+near+M25+J10",
    "https://maps.apple.com/?ll={lat},{lon}&q=Here", "https://maps.apple.com/?daddr=King's+Cross,+London",
    "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=16/{lat}/{lon}", "geo:{lat},{lon};u=20",
    "geo:0,0?q=10+Downing+Street,+London", "https://maps.app.goo.gl/AbCdEf123", "https://ul.waze.com/ul?ll={lat},{lon}",
    "https://example.com/some/article?id=42", "https://www.google.com/maps/@95.0,200.0,15z",
]
_ADDRESSES = ["221B Baker Street, London NW1 6XE", "10 Downing St", "7 Station Road, Little Chalfont, Amersham HP7 9PP",
              "postcode is SW1A 1AA", "42 High Road, Chigwell IG7 6DX"]


def corpus(n: int = N_CORPUS, seed: int = 6) -> list[str]:
    """Deterministic mix: half plain chat, a third with a link, the rest with an address; some long."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = rng.choice(_CHAT)
        roll = rng.random()
        if roll < 0.35:
            link = rng.choice(_LINKS).format(lat=f"{rng.uniform(49, 58):.5f}", lon=f"{rng.uniform(-6, 2):.5f}")
            text = f"{text} {link} {rng.choice(_CHAT)}"
        elif roll < 0.5:
            text = f"Meet at {rng.choice(_ADDRESSES)}. {text}"
        if i % 20 == 0:  # an e-mail-sized one now and then
            text = " ".join(rng.choice(_CHAT) for _ in range(200)) + " " + text
        out.append(text)
    return out


_FLOOR_RE = re.compile(r"(?i)\b(?:https?://|www\.|geo:)")


def _extract_cost(texts: list[str]) -> dict[str, float]:
    for t in texts[:50]:  # warm the regex caches
        extract(t)
    runs, floors = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        found = 0
        for t in texts:
            found += len(extract(t))
        runs.append((time.perf_counter() - t0) / len(texts) * 1e6)
        t0 = time.perf_counter()
        hits = 0
        for t in texts:
            hits += sum(1 for _ in _FLOOR_RE.finditer(t))
        floors.append((time.perf_counter() - t0) / len(texts) * 1e6)
    assert found > len(texts) // 4 and hits > 0
    return {"nav_intent_extract_us": statistics.median(runs), "nav_intent_extract_floor_us": statistics.median(floors)}


def run() -> dict[str, float]:
    figures = _extract_cost(corpus())
    figures.update(asyncio.run(_notify_latency()))
    return figures


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:<40} {v:10.3f}")
