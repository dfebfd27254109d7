"""For testers (issue 15 item 15): --tag and --shard choose files, --keep-on-failure keeps the
failed world up, step timings are since the previous step, and a Recorder writes what was done as
a scenario that replays green."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from dashbridge.simulator.__main__ import main
from dashbridge.simulator.phone import VirtualPhone
from dashbridge.simulator.scenario import (
    Recorder,
    Run,
    ScenarioError,
    ScenarioResult,
    format_result,
    hold_world,
    load_file,
    loads,
    parse_shard,
    run_scenario,
    select,
)
from dashbridge.simulator.world import WorldSpec


def _write(d: Path, name: str, tags: list[str] | None = None, bad: bool = False) -> str:
    tag_line = f"tags: [{', '.join(tags)}]\n" if tags else ""
    (d / name).write_text(f"version: 1\nname: {name}\n{tag_line}steps:\n  - wait: {'soon' if bad else '0s'}\n")
    return str(d / name)


def test_tags_choose_and_exclude(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", ["pairing", "slow"])
    b = _write(tmp_path, "b.yaml", ["calls"])
    c = _write(tmp_path, "c.yaml")
    bad = _write(tmp_path, "d.yaml", ["pairing"], bad=True)
    assert select([a, b, c, bad], tags=["pairing"]).files == [a]
    assert select([a, b, c], tags=["pairing,calls"]).files == [a, b]
    assert select([a, b, c], tags=["!slow"]).files == [b, c]
    sel = select([a, b, c, bad], tags=["calls", "-slow"])
    assert sel.files == [b] and sel.skipped == 2
    # A bad file is always reported (its tags cannot be read).
    assert [f for f, _ in sel.bad] == [bad] and "expected a duration" in str(sel.bad[0][1])


def test_shards_split_by_sorted_name_the_same_on_every_machine(tmp_path: Path) -> None:
    files = [_write(tmp_path, f"s{i:02d}.yaml") for i in range(11)]
    shards = [select(files, shard=(i, 3)).files for i in (1, 2, 3)]
    assert sorted(f for s in shards for f in s) == sorted(files)
    assert all(len(s) in (3, 4) for s in shards)
    assert [select(list(reversed(files)), shard=(i, 3)).files for i in (1, 2, 3)] == shards
    assert shards[0] == [files[0], files[3], files[6], files[9]]
    for text in ("0/3", "4/3", "x", "1/0", "2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(text)
    assert parse_shard("2/5") == (2, 5)
    assert main(["run", "--shard", "3/2", files[0]]) == 2


def test_cli_tag_filter_that_chooses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "a.yaml", ["pairing"])
    assert main(["run", "--tag", "calls", f]) == 2
    assert "1 left out by --tag" in capsys.readouterr().err
    # A shard with nothing to do is not a failure.
    assert main(["run", "--shard", "2/2", f]) == 0


async def test_step_timings_are_since_the_previous_step() -> None:
    sc = loads("""\
version: 1
name: timings
steps:
  - dashboard: open_pairing_window
  - wait: 300ms
  - expect_signal: Phones1.PropertiesChanged
    since: start
    args: {changed: {PairingWindow: true}}
  - wait: 200ms
""", "t.yaml")
    r = await run_scenario(sc)
    assert r.ok, r.error
    opened, waited, seen, waited2 = r.steps
    assert 0.3 <= waited.seconds < 1.0 and waited.at >= opened.at + 0.3
    # The signal came during the wait: before the previous step was done.
    assert seen.seconds < 0 and opened.at - 0.05 <= seen.at < waited.at
    assert 0.2 <= waited2.seconds < 1.0 and waited2.at >= waited.at + 0.2
    assert "[before at" in format_result(r, verbose=True)
    assert f"[+{waited.seconds:.2f}s at {waited.at:.2f}s]" in format_result(r, verbose=True)


async def test_keep_on_failure_holds_the_world_until_enter() -> None:
    sc = loads("""\
version: 1
name: fails on purpose
steps:
  - expect_signal: Phones1.PairingFinished
    within: 200ms
""", "f.yaml")
    rfd, wfd = os.pipe()
    out = io.StringIO()
    seen: dict[str, object] = {}

    async def hold(run: Run, result: ScenarioResult) -> None:
        async def press_enter() -> None:
            while "Press Enter" not in out.getvalue():
                await asyncio.sleep(0.02)
            seen["running"] = run.w.leftovers()  # the world is still up
            os.write(wfd, b"\n")

        task = asyncio.ensure_future(press_enter())
        with os.fdopen(rfd, "r") as stdin:
            await asyncio.wait_for(hold_world(run, result, out=out, stdin=stdin), 10)
        await task

    r = await run_scenario(sc, on_failure=hold)
    os.close(wfd)
    assert not r.ok and "not seen within" in r.error
    text = out.getvalue()
    assert "export DBUS_SYSTEM_BUS_ADDRESS=" in text and "FAIL  fails on purpose" in text
    assert any("dashbridged" in x for x in seen["running"])  # type: ignore[union-attr]


async def test_a_recorded_session_replays_green(tmp_path: Path) -> None:
    spec = WorldSpec(phones=[VirtualPhone("AA:BB:CC:DD:EE:01", name="Alice's Pixel", passkey=123456)],
                     config={"bluetooth": {"prompt_timeout": "10s"}})
    rec = Recorder.for_world(spec, name="Pairing, as done in the shell", ids={"AA:BB:CC:DD:EE:01": "alice"})
    rec.record({"say": "the driver opens the pairing window", "dashboard": "open_pairing_window"})
    rec.record({"phone": "alice", "do": "pair"})
    rec.record({"expect_signal": "Phones1.PromptRequested", "args": {"code": "123456"}, "save": "prompt"})
    rec.record({"dashboard": "answer_prompt", "prompt": "${prompt.prompt}", "accept": True})
    rec.record({"expect_signal": "Phones1.PairingFinished", "args": {"address": "AA:BB:CC:DD:EE:01",
                                                                     "success": True}})
    rec.record({"expect_phone": "alice", "pairing": "paired"})
    rec.record({"dashboard": "call", "method": "Phones1.ListPhones",
                "result": {"$contains": {"Address": "AA:BB:CC:DD:EE:01"}}})
    # A step that could not replay is refused when it is recorded.
    with pytest.raises(ScenarioError, match="unknown parameter acept"):
        rec.record({"dashboard": "answer_prompt", "acept": True})
    with pytest.raises(ScenarioError, match="not saved by an earlier step"):
        rec.record({"dashboard": "answer_prompt", "prompt": "${nothing.prompt}"})
    path = rec.save(tmp_path / "recorded.yaml")
    text = path.read_text()
    assert '"AA:BB:CC:DD:EE:01"' in text and "passkey: 123456" in text
    r = await run_scenario(load_file(path))
    assert r.ok, f"{r.error}\n{r.details}"
    assert len(r.steps) == 7
