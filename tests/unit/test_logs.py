"""Log redaction: tokens are keyed per install (stable across restarts, unrelated between cars) and
cannot be reversed by enumerating phone numbers; the key file is private."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashbridge.daemon import logs

NUMBER = "+447700900123"


@pytest.fixture(autouse=True)
def _restore_key() -> Iterator[None]:
    saved = logs._key
    yield
    logs._key = saved


def _token_after_start(state: Path, value: str = NUMBER) -> str:
    """What a daemon starting on this state directory would log for ``value``."""
    assert logs.set_up_redaction(state)
    return logs.redact(value)


def test_two_installs_give_different_tokens_for_the_same_number(tmp_path: Path) -> None:
    (tmp_path / "car1").mkdir()
    (tmp_path / "car2").mkdir()
    assert _token_after_start(tmp_path / "car1") != _token_after_start(tmp_path / "car2")


def test_the_same_install_gives_the_same_token_across_restarts(tmp_path: Path) -> None:
    first = _token_after_start(tmp_path)
    logs._key = os.urandom(32)  # a new process
    assert _token_after_start(tmp_path) == first
    assert logs.redact("+447700900124") != first
    assert first.startswith("#") and len(first) == 1 + logs.TOKEN_HEX


def test_the_key_file_is_private_even_with_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        logs.set_up_redaction(tmp_path)
    finally:
        os.umask(old)
    key = tmp_path / logs.KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.stat().st_size == logs.KEY_BYTES
    assert [p.name for p in tmp_path.iterdir()] == [logs.KEY_FILE]  # no temporary file left behind
    key.chmod(0o644)
    logs.set_up_redaction(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_token_is_not_found_by_enumerating_the_unkeyed_hash(tmp_path: Path) -> None:
    token = _token_after_start(tmp_path)[1:]

    def unkeyed(number: str) -> str:  # the old redact(): a bare 4-byte hash
        return hashlib.blake2s(number.encode(), digest_size=4).hexdigest()

    prefix = NUMBER[:-5]
    candidates = [f"{prefix}{n:05d}" for n in range(100_000)]
    old_tokens = {unkeyed(c): c for c in candidates}
    assert old_tokens[unkeyed(NUMBER)] == NUMBER  # the attack works on an unkeyed token ...
    assert token not in old_tokens  # ... and finds nothing for a keyed one
    sha = {hashlib.sha256(c.encode()).hexdigest()[: logs.TOKEN_HEX] for c in candidates}
    assert token not in sha


def test_an_unwritable_state_directory_falls_back_to_a_per_process_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    with caplog.at_level(logging.WARNING, logger="dashbridge.daemon.logs"):
        assert not logs.set_up_redaction(tmp_path / "file" / "state")  # ENOTDIR, even as root
    assert "cannot keep a key in the state directory" in caplog.text
    assert NUMBER not in caplog.text
    token = logs.redact(NUMBER)
    assert token == logs.redact(NUMBER) and token != _token_after_start(tmp_path)


def test_a_damaged_key_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / logs.KEY_FILE).write_bytes(b"")  # e.g. a power cut on a file system without ordering
    token = _token_after_start(tmp_path)
    assert (tmp_path / logs.KEY_FILE).stat().st_size == logs.KEY_BYTES
    assert _token_after_start(tmp_path) == token


def test_a_symlinked_key_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"k" * logs.KEY_BYTES)
    state = tmp_path / "state"
    state.mkdir()
    (state / logs.KEY_FILE).symlink_to(target)
    assert not logs.set_up_redaction(state)
    assert target.read_bytes() == b"k" * logs.KEY_BYTES
