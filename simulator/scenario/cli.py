"""What ``dashbridge-sim run`` does besides running: choosing files (``--tag``, ``--shard``), and
keeping a failed scenario's world up for inspection (``--keep-on-failure``).  ``__main__.py`` only
parses the options."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from .report import format_result
from .runner import Run, ScenarioResult
from .schema import ScenarioError, load_file


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/5"`` -> (2, 5): the second of five shards (1-based).  ValueError for anything else."""
    i, sep, n = text.partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit() or not 1 <= int(i) <= int(n):
        raise ValueError(f"--shard: expected i/n with 1 <= i <= n, e.g. 1/4, got {text!r}")
    return int(i), int(n)


def tag_filter(tags: Sequence[str]) -> tuple[set[str], set[str]]:
    """``--tag`` values (repeatable, or comma-separated): words to include (a scenario with any of
    them), and ``!word``/``-word`` to exclude (a scenario with any of them is left out)."""
    include: set[str] = set()
    exclude: set[str] = set()
    for value in tags:
        for word in (w.strip() for w in value.split(",")):
            if not word:
                continue
            if word[0] in "!-":
                exclude.add(word[1:])
            else:
                include.add(word)
    return include, exclude


@dataclass
class Selection:
    files: list[str] = field(default_factory=list)  # to run, sorted by file name
    bad: list[tuple[str, ScenarioError]] = field(default_factory=list)  # files that do not load
    skipped: int = 0  # left out by --tag
    other_shards: int = 0  # left to the other shards


def select(paths: Sequence[str], *, tags: Sequence[str] = (), shard: tuple[int, int] | None = None) -> Selection:
    """Load every file (a bad one is kept, to be reported: its tags are unknown), keep those the
    tags select, then this shard's share: with the files sorted by name, shard i of n takes the
    i-th, (i+n)-th, ... — the same split on every machine, whatever order the files were given in."""
    include, exclude = tag_filter(tags)
    sel = Selection()
    chosen: list[str] = []
    bad: dict[str, ScenarioError] = {}
    for path in sorted(set(paths)):
        try:
            sc = load_file(path)
        except ScenarioError as exc:
            bad[path] = exc
            chosen.append(path)
            continue
        have = set(sc.tags)
        if (include and not have & include) or have & exclude:
            sel.skipped += 1
            continue
        chosen.append(path)
    if shard is not None:
        i, n = shard
        mine = chosen[i - 1::n]
        sel.other_shards = len(chosen) - len(mine)
        chosen = mine
    sel.files = [p for p in chosen if p not in bad]
    sel.bad = [(p, bad[p]) for p in chosen if p in bad]
    return sel


async def hold_world(run: Run, result: ScenarioResult, *, out: TextIO | None = None,
                     stdin: TextIO | None = None) -> None:
    """``--keep-on-failure``: the scenario failed; show why and how to reach its world (the
    ``export`` lines for dashbridgectl, busctl, d-feet ...), then wait for Enter (or Ctrl-C, or the
    end of input) before the world is stopped."""
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    print(format_result(result, verbose=True), file=out)
    print("\nThe world is kept up for inspection.  In another terminal:", file=out)
    for k, v in run.w.env().items():
        print(f"export {k}='{v}'", file=out)
    if run.w.daemon is not None:
        print(f"# dashbridged: pid {run.w.daemon.pid}, log {run.w.daemon.log_path}", file=out)
    print("Press Enter (or Ctrl-C) to stop it.", file=out, flush=True)
    await _line_from(stdin)


async def _line_from(stdin: TextIO) -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[None] = loop.create_future()
    try:
        fd = stdin.fileno()
    except (OSError, ValueError, AttributeError):
        fd = -1

    def readable() -> None:
        with contextlib.suppress(OSError, ValueError):
            stdin.readline()
        if not got.done():
            got.set_result(None)

    if fd >= 0:
        try:
            loop.add_reader(fd, readable)
        except (OSError, ValueError, NotImplementedError):
            fd = -1
    if fd < 0:  # not a pollable file: read it in a daemon thread (never joined at exit)
        import threading

        def done() -> None:
            if not got.done():
                got.set_result(None)

        def read() -> None:
            with contextlib.suppress(OSError, ValueError):
                stdin.readline()
            loop.call_soon_threadsafe(done)

        threading.Thread(target=read, daemon=True).start()
    try:
        await got
    finally:
        if fd >= 0:
            loop.remove_reader(fd)
