"""The directory obexd writes the files it pulls from phones into (PBAP pages, MAP messages).

Given an empty target, obexd writes a transfer into *its own* temp directory; under systemd the
daemon has ``PrivateTmp=yes`` and cannot open that file.  So every ``PullAll``/``Get`` names an
explicit, absolute, unique target here, which the daemon reads and always deletes.

Where: ``buses.transfer_dir`` if set, else ``$RUNTIME_DIRECTORY/obex`` (systemd's
``RuntimeDirectory=dashbridge``: ``/run/dashbridge/obex``, emptied when the service stops), else
``<state_directory>/obex``.  The daemon creates it 0700.  Who writes: obexd, opening the target with
``O_WRONLY|O_CREAT|O_TRUNC``.  The daemon creates each target file first (``O_EXCL``), so obexd
truncates a file the daemon owns and the daemon can always read and delete it:

* obexd runs as the daemon's user (README "Deploying on a head unit", step 4): 0700 directory,
  0600 files.
* obexd runs as another user: the integrator creates the directory ``2770`` (setgid) with a group
  both users are in (see the README); the daemon keeps that mode and makes its target files 0660.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

PREFIX = "dashbridge-"  # every file we name starts so; only those are ever cleared


def resolve(cfg: Config, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    configured = cfg.buses.transfer_dir
    if configured:
        return Path(configured)
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / "obex"
    return Path(cfg.state_directory) / "obex"


class TransferDir:
    def __init__(self, path: Path) -> None:
        if not path.is_absolute():
            path = path.absolute()  # obexd has another working directory: targets must be absolute
        self.path = path
        self.file_mode = 0o600

    def prepare(self) -> TransferDir:
        """Create the directory (0700, whatever the umask); keep an integrator's group mode but
        never world access; remove our files left by a crash."""
        try:
            self.path.mkdir(mode=0o700, parents=True)
            os.chmod(self.path, 0o700)
        except FileExistsError:
            pass
        st = os.stat(self.path)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o007:
            os.chmod(self.path, mode & ~0o007)
            log.warning("obex transfer directory %s was open to everyone; removed the 'other' bits", self.path)
            mode &= ~0o007
        self.file_mode = 0o660 if mode & 0o020 else 0o600
        for entry in os.scandir(self.path):
            if entry.name.startswith(PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        return self

    def new_target(self, kind: str) -> str:
        """A fresh, empty file with a unique absolute name for obexd to write (truncate) into."""
        while True:
            name = self.path / f"{PREFIX}{kind}-{secrets.token_hex(8)}"
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             self.file_mode)
            except FileExistsError:
                continue
            try:
                os.fchmod(fd, self.file_mode)  # whatever the umask
            finally:
                os.close(fd)
            return str(name)

    @staticmethod
    def discard(name: str) -> None:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass  # obexd removes the file of a failed GET itself
        except OSError as exc:
            log.warning("cannot remove obex transfer file %s: %s", name, exc.strerror)
