"""The score cache (durable, resumable) and the lock on a results folder.

Scores live under ``<cache>/<model fingerprint>/<task fingerprint>/`` as Arrow IPC stream
segments (``*.arrows``): each process of each run opens its own segment and appends one record
batch per scored batch, flushed and fsynced before the runner moves on. A process killed
mid-write leaves at most a torn last message, which readers skip, so everything appended before
it is kept. Nothing is pickled; a segment is plain Arrow that any Arrow reader opens.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Self

import pyarrow as pa

from mrb.data import Pack, atomic_write_bytes
from mrb.errors import MRBError
from mrb.rerankers.base import CallableReranker, Reranker
from mrb.tasks import TaskSpec

log = logging.getLogger(__name__)

SCHEMA = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("score", pa.float64())])
LOCK_FILE = ".mrb.lock"


def short_digest(payload: Any) -> str:
    """16 hex digits of the sha256 of `payload` as canonical JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_key(reranker: Reranker) -> dict[str, Any]:
    """What identifies a reranker's scores: its class, settings (preset, revision, dtype, adapter
    options) and, for a wrapped plain function, the function's code."""
    key: dict[str, Any] = {"class": f"{type(reranker).__module__}.{type(reranker).__qualname__}",
                           "name": reranker.name, "settings": reranker.settings()}
    if isinstance(reranker, CallableReranker):
        fn = inspect.unwrap(reranker.fn)
        code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__func__", None), "__code__", None)
        key["function"] = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
        if code is not None:
            key["code"] = hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16]
    return key


def task_key(task: TaskSpec, pack: Pack) -> dict[str, Any]:
    """What identifies a task's pairs: its name, instruction, depth, id filter and the pack's file hashes."""
    return {"task": task.name, "instruction": task.instruction, "depth": task.depth,
            "ignore_identical_ids": task.ignore_identical_ids, "pack_sha256": pack.manifest.get("sha256", {})}


class ScoreCache:
    """Scores of one (model, task) key: read every segment, append to this process's own one."""

    def __init__(self, root: Path, model: dict[str, Any], task: dict[str, Any]) -> None:
        self.folder = Path(root) / short_digest(model) / short_digest(task)
        self.model, self.task = model, task
        self._file: IO[bytes] | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.segment: Path | None = None

    def load(self) -> dict[tuple[str, str], float]:
        """Every score durably appended so far, from all segments (a torn last message is skipped)."""
        scores: dict[tuple[str, str], float] = {}
        for path in sorted(self.folder.glob("*.arrows")):
            for batch in _read_segment(path):
                scores.update(zip(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()), batch.column(2).to_pylist()))
        return scores

    def clear(self) -> None:
        """Forget this key's scores (``--overwrite always``)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def append(self, query_ids: list[str], doc_ids: list[str], scores: Iterable[float]) -> None:
        """Append one batch durably (flushed and fsynced) before returning."""
        try:
            if self._writer is None:
                self._open()
            assert self._writer is not None and self._file is not None
            self._writer.write_batch(pa.record_batch([query_ids, doc_ids, list(scores)], schema=SCHEMA))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._abandon()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise MRBError(
                    f"no space left on the device while writing the score cache {self.segment or self.folder}: "
                    "the scores appended before this batch are kept and the cache stays readable; "
                    "free some space and run again to resume"
                ) from exc
            raise MRBError(f"cannot write the score cache {self.segment or self.folder}: {exc}") from exc

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "key.json"
        if not meta.exists():
            atomic_write_bytes(meta, (json.dumps({"model": self.model, "task": self.task}, indent=2, sort_keys=True, default=str) + "\n").encode())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.segment = self.folder / f"{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.arrows"
        self._file = open(self.segment, "xb")  # noqa: SIM115
        self._writer = pa.ipc.new_stream(self._file, SCHEMA)

    def _abandon(self) -> None:
        """After a failed write: drop the writer without writing more (the segment keeps what it has)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._writer, self._file = None, None

    def close(self) -> None:
        if self._writer is not None and self._file is not None:
            try:
                self._writer.close()
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                log.warning("closing score cache segment %s: %s", self.segment, exc)
        self._abandon()


def _read_segment(path: Path) -> Iterable[pa.RecordBatch]:
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError):
        return  # empty, or killed before its header was complete
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError):
            log.info("score cache segment %s ends in a torn batch (an interrupted write); it is skipped", path)
            return


class ResultsLock:
    """An exclusive lock on a results folder (``flock`` on ``.mrb.lock``, released by the kernel if the holder dies)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise MRBError(
                f"results folder {self.path.parent} is in use by {holder}; wait for that run to finish or use another --output"
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} (started {started})\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
