"""The lock on a results folder: one run at a time writes there."""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from mrb.errors import MRBError
from mrb.io import make_folder, os_error

LOCK_FILE = ".mrb.lock"


class ResultsLock:
    """An exclusive lock on a results folder (``flock`` on ``.mrb.lock``, released by the kernel if the holder dies)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> Self:
        make_folder(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise os_error(self.path, exc, "create the lock file") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise MRBError(
                f"results folder {self.path.parent} is in use by {holder}; wait for that run to finish or use another --output"
            ) from None
        started = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} (started {started})\n".encode())
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise os_error(self.path, exc, "write the lock file") from exc
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
