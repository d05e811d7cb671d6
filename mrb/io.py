"""Files MRB writes: atomic replacement, the user's umask, clear errors for a full or read-only disk,
and names from data that must stay inside their folder."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mrb.errors import MRBError

if TYPE_CHECKING:
    import pyarrow as pa


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _process_umask()  # read once at import: os.umask can only be read by setting it
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def os_error(path: Path | str, exc: OSError, doing: str = "write") -> MRBError:
    """An `MRBError` for a failed file operation, naming the file and the cause in words."""
    if exc.errno in NO_SPACE:
        return MRBError(f"cannot {doing} {path}: no space left on the device; free some space and run again")
    if isinstance(exc, PermissionError):
        return MRBError(f"cannot {doing} {path}: permission denied")
    if isinstance(exc, NotADirectoryError) or exc.errno == errno.ENOTDIR:
        return MRBError(f"cannot {doing} {path}: a parent of it is a file, not a folder")
    if exc.errno == errno.EROFS:
        return MRBError(f"cannot {doing} {path}: the file system is read-only")
    return MRBError(f"cannot {doing} {path}: {exc.strerror or exc}")


def make_folder(path: Path) -> Path:
    """Create `path` (and its parents) as a folder, or fail with an `MRBError` saying why."""
    if path.exists() and not path.is_dir():
        raise MRBError(f"cannot use {path} as a folder: it is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(path, exc, "create the folder") from exc
    return path


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A temporary file beside `path`, fsynced and renamed over it on success, removed on failure.

    The file gets the permissions of any file the user creates (0666 less the umask); an OSError
    becomes an `MRBError` naming `path`.
    """
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise os_error(path, exc) from exc
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise os_error(path, exc) from exc
        raise


_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what `atomic_file` names its temporary files


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files a killed writer left under `folder` (call it holding the folder's lock)."""
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file() and _TEMPORARY.match(p.name)] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the complete new content."""
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_write_parquet(path: Path, table: pa.Table, row_group_size: int | None = None) -> None:
    """Write a Parquet file atomically, streaming it to disk, with a CRC on every page (checked on read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_file(path) as fh:
        try:
            pq.write_table(table, fh, row_group_size=row_group_size, write_page_checksum=True)
        except pa.ArrowException as exc:  # pyarrow reports a failed write of the stream as ArrowIOError
            raise OSError(getattr(exc, "errno", None) or errno.EIO, str(exc)) from exc


def read_parquet_table(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole Parquet file with its page checksums verified; a missing, unreadable or corrupt
    file is an `MRBError` naming it and `what` it should hold."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise MRBError(f"{path} is missing: {what} are needed")
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise MRBError(f"{path}: cannot read {what}: the file is damaged or not Parquet ({exc})") from exc


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """A file name for a label (a model name, a hub id, a path): runs of other characters become ``__``,
    and leading or trailing dots and underscores go, so the result is one plain path component."""
    return _UNSAFE.sub("__", name).strip("._") or "_"


def contained(folder: Path, *parts: str) -> Path:
    """`folder / parts…`, refused unless it stays inside `folder` (no ``..``, no absolute part, no link out)."""
    path = folder.joinpath(*parts)
    root = folder.resolve()
    if any(
        part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part for part in parts
    ) or not path.resolve().is_relative_to(root):
        raise MRBError(f"refusing the name {'/'.join(parts)!r}: it would leave the folder {folder}")
    return path
