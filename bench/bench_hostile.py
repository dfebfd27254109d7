"""What a hostile phone can cost the daemon (issue 11, item 4), through the real parsing paths.

* ``hostile_max_loop_stall_ms``: the longest synchronous slice the event loop runs for one piece
  of hostile data: destination extraction of a message (64 KB of ``"SW1A 1AA "``, 64 KB of other
  repeated addresses / links; ``MessagesComponent.offer_destinations``), staging one batch of
  hostile contacts in the store (the ``sink`` of ``ContactsSync._pull_page``), reading a stored
  contact back for the API (per contact).  Best of 3 per message case (the machine is shared),
  then the max over cases.  Budget: under 100 ms.  ``hostile_max_loop_stall_ms_floor``: the same
  paths for normal data (a normal message; the batches of a normal 5,000-contact book).
* ``hostile_max_worker_slice_ms``: the longest single piece of work done in a worker thread
  (``asyncio.to_thread``: it holds the GIL for at most the switch interval at a time, so it does
  not stall the loop, but it bounds latency): ``decode_message`` of a downloaded bMessage with a
  1 MB body / an e-mail with a 900 KB subject, one ``CardReader.next_batch`` of the hostile
  phonebooks: a 0.93 MB card of ``TYPE`` lists (11.9 s before the fix), a card folded into
  1-character lines, one with 2,000 TEL properties with 40 parameters each, a 50 MB base64 photo,
  a 100,000-character ``FN``, ``CHARSET=punycode``, the 500 near-limit cards below.
  ``..._floor``: a normal message decoded, a batch of the normal 5,000-contact book.
* ``hostile_peak_rss_mib``: peak RSS (``ru_maxrss``) of a fresh process that syncs one hostile
  phone's page through the real path (``CardReader`` -> ``ContactStore.stage``): 500 cards just
  under the 1 MB per-card limit (each with a 250 KB photo); ``VmHWM`` where Linux has it, as
  ``ru_maxrss`` keeps the parent's peak across fork+exec.  Budget: under 150 MiB.
  ``hostile_peak_rss_mib_floor``: a fresh process with the same modules imported and the store
  open.  ``hostile_db_mib``: the database after that page (was 907 MB before the limits);
  ``hostile_near_limit_cards_kept``: how many of the 500 fitted the page's byte budget.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHONE = "AA:BB:CC:00:BE:02"
RUNS = 3


def _best_ms(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def card(*lines: bytes, version: bytes = b"3.0") -> bytes:
    return b"BEGIN:VCARD\r\nVERSION:" + version + b"\r\n" + b"".join(x + b"\r\n" for x in lines) + b"END:VCARD\r\n"


def hostile_books() -> dict[str, bytes]:
    """Phonebook files a hostile phone could make obexd write (one page each)."""
    types = b",".join(b"T%d" % i for i in range(10_500))  # ~58 KB of distinct TYPE values
    photo = base64.b64encode(bytes(54))
    return {
        "types_0.93mb": card(b"FN:Types", *[b"TEL;TYPE=" + types + b":+4477009%05d" % i for i in range(15)]),
        "folded_1char": card(b"FN:" + b"\r\n a" * 60_000, b"TEL:+447700900001"),
        "tel_params_2000": card(b"FN:Params", *[b"TEL;" + b";".join(b"X-P%d=v" % j for j in range(40))
                                                + b":+44770090%04d" % i for i in range(1990)]),
        "photo_50mb": card(b"FN:Photo", b"PHOTO;ENCODING=b;TYPE=JPEG:/9j/"
                           + (b"\r\n " + photo) * (50 * 1024 * 1024 // 54), b"TEL:+447700900002"),
        "fn_100k": card(b"FN:" + b"A" * 100_000, b"TEL:+447700900003"),
        "punycode": card(b"N;CHARSET=punycode:Smith;John", b"TEL:+447700900004", version=b"2.1"),
    }


def near_limit_card(i: int) -> bytes:
    """Just under the 1 MB per-card limit (non-photo bytes), plus a photo under the 256 KB cap."""
    big = b"x" * 60_000
    photo = base64.b64encode(bytes(250 * 1024))
    photo_lines = b"\r\n ".join(photo[k:k + 76] for k in range(0, len(photo), 76))
    return card(b"FN:" + big, b"N:" + big + b";" + big[:1000], b"ORG:" + big, b"TITLE:" + big,
                *[b"TEL;TYPE=CELL:+44" + b"7" * 59_000 + b"%04d" % (i * 16 + k) for k in range(8)],
                *[b"EMAIL:" + big + b"%d@example.com" % k for k in range(4)],
                b"PHOTO;ENCODING=b;TYPE=JPEG:" + photo_lines)


def _sync_pages(vcf: Path, db: Path, timer: list[float], worker: list[float]) -> int:
    """One page through the sync's real path: CardReader batches -> ContactStore.stage."""
    from dashbridge.daemon.store import Store
    from dashbridge.profiles.limits import MAX_PAGE_BYTES
    from dashbridge.profiles.pbap.callerid import Normalizer
    from dashbridge.profiles.pbap.store import ContactStore, Counters
    from dashbridge.profiles.pbap.sync import CardReader
    from dashbridge.profiles.pbap.vcard import VCardParser

    st = Store(db)
    try:
        with st.transaction() as t:
            t.execute("INSERT OR IGNORE INTO phones(address, name, paired_at) VALUES (?, 'bench', 0)", (PHONE,))
        contacts = ContactStore(st, Normalizer("GB"))
        contacts.begin_snapshot(PHONE, "pb")
        reader = CardReader(str(vcf), VCardParser(), MAX_PAGE_BYTES)
        pos = 0
        while not reader.done:
            t0 = time.perf_counter()
            batch = reader.next_batch()
            worker.append((time.perf_counter() - t0) * 1000.0)
            t0 = time.perf_counter()
            pos += contacts.stage(PHONE, "pb", pos, batch)
            timer.append((time.perf_counter() - t0) * 1000.0)
        contacts.commit(PHONE, {"pb": Counters("1", "1", "db")}, {})
        t0 = time.perf_counter()
        for row in st.execute("SELECT id FROM contacts WHERE phone=? AND book='pb' LIMIT 50", (PHONE,)).fetchall():
            contacts.contact(int(row[0]))
        timer.append((time.perf_counter() - t0) * 1000.0 / 50)
        return pos
    finally:
        st.close()


_RSS_CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import phonenumbers  # noqa: F401
from dashbridge.daemon.store import Store
import dashbridge.profiles.pbap.store, profiles.pbap.vcard, profiles.pbap.callerid, profiles.pbap.sync  # noqa: F401
from bench.bench_hostile import _sync_pages
loop, worker = [], []
n = 0
if sys.argv[2] == "-":
    Store(Path(sys.argv[3])).close()
else:
    n = _sync_pages(Path(sys.argv[2]), Path(sys.argv[3]), loop, worker)
def hwm():  # this process's own peak (ru_maxrss keeps the parent's peak across fork+exec on Linux)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"n": n, "rss": hwm(),
                  "loop": max(loop, default=0.0), "worker": max(worker, default=0.0)}))
"""


def _child(vcf: str, db: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(ROOT), vcf, str(db)], capture_output=True,
                         text=True, check=True, timeout=600)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _messages() -> tuple[dict[str, Callable[[], object]], dict[str, Callable[[], object]]]:
    from dashbridge.profiles.map import bmessage, intents
    from dashbridge.profiles.map.handler import MAX_TEXT_CHARS, decode_message
    from dashbridge.profiles.map.listing import Listing

    def decode(data: bytes, mtype: str = "sms") -> Callable[[], object]:
        item = Listing("h1", "inbox", mtype, "", "20240101T120000", "Bench", "+447700900001", "", len(data), False,
                       "complete")
        return lambda: decode_message("AA:BB:CC:00:BE:02", "h1", item, data, False, max_text=MAX_TEXT_CHARS,
                                      max_bytes=1024 * 1024)

    normal_text = "Meet me at 221B Baker Street, London NW1 6XE at 7 https://maps.app.goo.gl/abc123 x"
    sms = bmessage.serialize(bmessage.new_message(normal_text, recipient="+447700900001"))
    huge_body = bmessage.serialize(bmessage.new_message("SW1A 1AA " * (1024 * 1024 // 9),
                                                        recipient="+447700900001"))
    email_text = ("From: a@example.com\r\nSubject: " + "S" * (900 * 1024) + "\r\n\r\n" + "body " * 20_000)
    huge_email = bmessage.serialize(bmessage.new_message(email_text, recipient="a@example.com", msg_type="EMAIL"))
    on_loop: dict[str, Callable[[], object]] = {  # MessagesComponent.offer_destinations
        "extract_64k_postcodes": lambda: intents.extract("SW1A 1AA " * (65536 // 9)),
        "extract_64k_addresses": lambda: intents.extract("12 Baker Street, " * (65536 // 17)),
        "extract_64k_links": lambda: intents.extract("https://maps.google.com/?q=51.5,-0.12 " * 1700),
        "extract_normal": lambda: intents.extract(normal_text),
    }
    worker: dict[str, Callable[[], object]] = {  # PhoneSession._fetch: asyncio.to_thread(decode_message)
        "decode_1mb_body": decode(huge_body),
        "decode_900k_subject_email": decode(huge_email, "email"),
        "decode_normal": decode(sms),
    }
    return on_loop, worker


def run() -> dict[str, float]:
    from dashbridge.simulator.vcards import generate

    figures: dict[str, float] = {}
    on_loop, off_loop = _messages()
    stalls = {name: _best_ms(fn) for name, fn in on_loop.items() if not name.endswith("_normal")}
    floor_stalls = {name: _best_ms(fn) for name, fn in on_loop.items() if name.endswith("_normal")}
    worker = {name: _best_ms(fn) for name, fn in off_loop.items() if not name.endswith("_normal")}
    floor_worker = {name: _best_ms(fn) for name, fn in off_loop.items() if name.endswith("_normal")}
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        d = Path(tmp)
        for name, data in hostile_books().items():
            vcf = d / f"{name}.vcf"
            vcf.write_bytes(data)
            loop_ms: list[float] = []
            worker_ms: list[float] = []
            _sync_pages(vcf, d / f"{name}.db", loop_ms, worker_ms)
            stalls[f"stage_{name}"] = max(loop_ms)
            worker[name] = max(worker_ms)
        book = d / "normal.vcf"
        book.write_bytes(generate(5000, seed=7, photo_every=10, photo_bytes=4096, history=0)
                         .render("pb", "3.0", offset=1))
        loop_ms, worker_ms = [], []
        _sync_pages(book, d / "normal.db", loop_ms, worker_ms)
        floor_stalls["stage_normal_5000"] = max(loop_ms)
        floor_worker["parse_normal_5000"] = max(worker_ms)
        big = d / "near_limit.vcf"
        with open(big, "wb") as fh:
            for i in range(500):
                fh.write(near_limit_card(i))
        rss = _child(str(big), d / "big.db")
        rss_floor = _child("-", d / "floor.db")
        stalls["stage_500_near_limit"] = rss["loop"]
        figures["hostile_near_limit_cards_kept"] = rss["n"]
        worker["500_near_limit"] = rss["worker"]
        figures["hostile_db_mib"] = (d / "big.db").stat().st_size / 1048576.0
    worst = max(stalls, key=lambda k: stalls[k])
    print(f"   slowest on-loop slice: {worst} ({stalls[worst]:.1f} ms); worker: "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in worker.items()), flush=True)
    figures["hostile_max_loop_stall_ms"] = stalls[worst]
    figures["hostile_max_loop_stall_ms_floor"] = max(floor_stalls.values())
    figures["hostile_max_worker_slice_ms"] = max(worker.values())
    figures["hostile_max_worker_slice_ms_floor"] = max(floor_worker.values())
    figures["hostile_peak_rss_mib"] = rss["rss"]
    figures["hostile_peak_rss_mib_floor"] = rss_floor["rss"]
    return figures
