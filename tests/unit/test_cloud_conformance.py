"""The conformance kit (``dashbridge-sim cloud-conformance``) against the project's fake backend
over real HTTPS with mutual TLS on 127.0.0.1: it passes where the backend follows the protocol,
exercises redirects, 410 and Retry-After when the backend migrates or is busy, fails where the
backend breaks the contract, and the published JWS test vectors agree with the car's verifier."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dashbridge.simulator import conformance as kit
from dashbridge.simulator.cloud import FakeCloud

ROOT = Path(__file__).parents[2]


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[FakeCloud]:
    c = FakeCloud(tmp_path / "cloud")
    await c.start()
    yield c
    await c.close()


async def _run(cloud: FakeCloud, url: str | None = None) -> dict[str, kit.Case]:
    cfg = cloud.daemon_config()
    cases = await kit.run(url or cloud.url, ca=cfg["tls"]["ca_file"], cert=cfg["tls"]["cert_file"],
                          key=cfg["tls"]["key_file"], vehicle=cfg["vehicle_id"], anchors=cloud.trust_anchors())
    return {c.name: c for c in cases}


async def test_the_fake_backend_passes(cloud: FakeCloud) -> None:
    cases = await _run(cloud)
    failed = {n: c.detail for n, c in cases.items() if c.outcome == "failed"}
    assert failed == {}
    for name in ("discovery", "idempotent replay", "idempotency key reused for other content",
                 "entitlements and ETag", "vehicle must match the certificate", "JWS test vectors"):
        assert cases[name].outcome == "passed", (name, cases[name].detail)
    assert "verifies" in cases["entitlements and ETag"].detail


async def test_destinations_are_read_page_by_page_following_next(cloud: FakeCloud) -> None:
    cloud.page_size = 4
    vin = next(iter(cloud.vehicles))
    for i in range(10):
        cloud.send_to_car(vin, f"Stop {i}", address=f"{i} Road")
    cases = await _run(cloud)
    assert cases["destinations"].outcome == "passed", cases["destinations"].detail
    assert cases["destinations"].detail == "10 waiting in 3 page(s)"
    assert [bool(r.query) for r in cloud.requests("destinations")] == [False, True, True]


async def test_a_migrating_backend_redirects_and_a_migrated_one_answers_410(cloud: FakeCloud) -> None:
    await cloud.migrate("migrating")
    cases = await _run(cloud)
    assert cases["redirects"].outcome == "passed", cases["redirects"].detail
    assert "API v2" in cases["discovery"].detail
    assert not [c for c in cases.values() if c.outcome == "failed"]


async def test_retry_after_is_checked_and_honoured(cloud: FakeCloud) -> None:
    cloud.set_fault("status", status=503, retry_after="1", op="status", count=1)
    cases = await _run(cloud)
    assert cases["Retry-After on 429/503"].outcome == "passed"
    assert cases["status"].outcome == "passed"  # the kit waited and asked again, as the car does


async def test_a_backend_that_breaks_the_contract_fails(cloud: FakeCloud) -> None:
    cloud.set_fault("status", status=503, op="status", count=5)  # busy, and no Retry-After
    cloud.set_fault("wrong_content_type", op="destinations")
    cases = await _run(cloud)
    assert cases["Retry-After on 429/503"].outcome == "failed"
    assert cases["status"].outcome == "failed" and "503" in cases["status"].detail
    assert cases["destinations"].outcome == "failed"
    report = kit.text_report(list(cases.values()), cloud.url)
    assert report.splitlines()[-1].startswith(f"{sum(c.outcome == 'passed' for c in cases.values())} passed, ")
    xml = kit.junit(list(cases.values()), cloud.url)
    assert "<failure" in xml and 'name="status"' in xml


def test_the_published_vectors_are_reproducible_and_agree_with_the_car(tmp_path: Path) -> None:
    published = ROOT / "docs" / "cloud-vectors" / "vectors.json"
    assert kit.write_vectors(tmp_path).read_text() == published.read_text(), \
        "docs/cloud-vectors/vectors.json is stale: regenerate with dashbridge-sim cloud-conformance --write-vectors"
    assert "14 vectors" in kit.check_vectors(published)
    doc = json.loads(published.read_text())
    expects = {v["name"]: v["expect"] for v in doc["vectors"]}
    assert expects["valid"] == "accepted" and expects["alg_none"] == "unsupported_algorithm"
    # a vector whose verdict the car does not share is reported
    doc["vectors"][1]["expect"] = "accepted"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    with pytest.raises(kit.Failed, match="bad_signature: car says bad_signature, vector expects accepted"):
        kit.check_vectors(tampered)


async def test_the_command_line_writes_a_report_and_junit(cloud: FakeCloud, tmp_path: Path) -> None:
    import asyncio

    cfg = cloud.daemon_config()
    anchors = tmp_path / "anchors.json"
    anchors.write_text(json.dumps(cloud.trust_anchors()))
    junit = tmp_path / "conformance.xml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dashbridge.simulator", "cloud-conformance", cloud.url,
        "--ca", cfg["tls"]["ca_file"], "--cert", cfg["tls"]["cert_file"], "--key", cfg["tls"]["key_file"],
        "--anchors", str(anchors), "--junit", str(junit),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode() + err.decode()
    text = out.decode()
    assert "PASSED  entitlements and ETag" in text and " 0 failed" in text.splitlines()[-1]
    assert junit.read_text().startswith("<testsuite")
