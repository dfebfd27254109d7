"""A line printed above the simulator shell's prompt from another thread (the world's signals)
must not read readline's line buffer: readline changes it without the GIL while keys arrive, and
glibc aborted the shell decoding it half-changed (``__mbsrtowcs_l: Assertion ... failed`` after a
signal line met a typed "quit" on a loaded machine)."""

from __future__ import annotations

import io
import threading

import pytest

from dashbridge.simulator import shell


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Readline:
    def __init__(self) -> None:
        self.read_on: list[str] = []

    def get_line_buffer(self) -> str:
        self.read_on.append(threading.current_thread().name)
        return "qu"


def test_off_the_prompt_thread_the_line_buffer_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Readline()
    monkeypatch.setattr(shell, "readline", fake)
    out = _Tty()
    t = threading.Thread(target=shell.print_above_prompt, args=(out, "  ⟵ Phones1.PairingFinished", "sim> "),
                         name="world")
    t.start()
    t.join(10)
    assert fake.read_on == []
    assert out.getvalue() == "\r\x1b[K  ⟵ Phones1.PairingFinished\nsim> "
    # on the prompt's own thread (a completer, a command's own output) what was typed comes back
    shell.print_above_prompt(out, "line", "sim> ")
    assert fake.read_on == ["MainThread"] and out.getvalue().endswith("line\nsim> qu")
