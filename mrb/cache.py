"""The score cache: durable, resumable, checksummed.

Scores live under ``<cache>/<model identity>/<task fingerprint>/`` as Arrow IPC stream segments
(``*.arrows``): each process of each run opens its own segment and appends one record batch per
scored batch, with the sha256 of the batch's ids and scores in the batch's metadata, flushed to the
kernel before the runner moves on and fsynced in groups (at most a second or `COMMIT_ROWS` apart).
A process killed mid-write leaves at most a torn last message; a batch whose checksum does not match
(a damaged file) is dropped; either way those pairs are scored again and the run says so. Nothing
is pickled: a segment is plain Arrow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from mrb.data import Pack
from mrb.errors import MRBError
from mrb.identity import ModelIdentity, short_digest
from mrb.io import NO_SPACE, atomic_write_bytes, make_folder
from mrb.tasks import TaskSpec

log = logging.getLogger(__name__)

SCHEMA = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("score", pa.float64())])
CHECKSUM_KEY = b"sha256"
# Group commit: an fsync per scored batch took 30-45% of a cheap scorer's task time; durability against a
# machine crash needs no more than a commit a second (or every few thousand pairs, whichever comes first).
COMMIT_SECONDS = 1.0
COMMIT_ROWS = 4096


def task_key(task: TaskSpec, pack: Pack) -> dict[str, Any]:
    """What decides a pair's score besides the model: the task, its instruction and the pack's records
    (not the depth or the filters, which decide only which pairs are scored)."""
    return {"task": task.name, "instruction": task.instruction, "pack_sha256": pack.manifest.get("sha256", {})}


def batch_checksum(query_ids: list[str], doc_ids: list[str], scores: list[float]) -> bytes:
    """The sha256 (hex) of one batch's ids and scores, as stored in and checked against its metadata."""
    digest = hashlib.sha256()
    for ids in (query_ids, doc_ids):
        digest.update("\0".join(ids).encode() + b"\1")
    digest.update(struct.pack(f"<{len(scores)}d", *scores))
    return digest.hexdigest().encode()


@dataclass
class CachedScores:
    """What a cache read found: the scores, and the pairs of batches it had to drop."""

    scores: dict[tuple[str, str], float]
    rejected: int = 0  # pairs in batches whose checksum did not match


class ScoreCache:
    """Scores of one (model identity, task) key: read every segment, append to this process's own one."""

    def __init__(self, root: Path, model: ModelIdentity, task: dict[str, Any]) -> None:
        if model.digest is None:
            raise MRBError(f"{model.advice()}; its scores cannot be cached")
        self.folder = Path(root) / model.digest / short_digest(task)
        self.model, self.task = model, task
        self._file: IO[bytes] | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.segment: Path | None = None
        self._unsynced, self._synced_at = 0, time.monotonic()
        self.syncs = 0  # fsyncs of this process's segment

    def load(self) -> CachedScores:
        """Every score durably appended so far, from all segments; damaged or torn batches are left out."""
        found = CachedScores({})
        for path in sorted(self.folder.glob("*.arrows")):
            for batch, columns in _read_segment(path):
                if columns is None:
                    found.rejected += batch.num_rows
                    continue
                query_ids, doc_ids, scores = columns
                found.scores.update(zip(zip(query_ids, doc_ids), scores))
        if found.rejected:
            log.warning(
                "%s: %d cached scores failed their checksum (a damaged cache file) and will be scored again",
                self.folder,
                found.rejected,
            )
        return found

    def clear(self) -> None:
        """Forget this key's scores (``--overwrite always``)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def append(self, query_ids: list[str], doc_ids: list[str], scores: Iterable[float]) -> None:
        """Append one batch: handed to the kernel before returning (a killed process loses nothing appended),
        and fsynced in groups, at most `COMMIT_SECONDS` or `COMMIT_ROWS` apart (what a machine crash can lose)."""
        values = list(scores)
        try:
            if self._writer is None:
                self._open()
            assert self._writer is not None and self._file is not None
            batch = pa.record_batch([query_ids, doc_ids, values], schema=SCHEMA)
            self._writer.write_batch(batch, custom_metadata={CHECKSUM_KEY: batch_checksum(query_ids, doc_ids, values)})
            self._file.flush()
            self._unsynced += len(values)
            if self._unsynced >= COMMIT_ROWS or time.monotonic() - self._synced_at >= COMMIT_SECONDS:
                self._sync()
        except (OSError, MRBError) as exc:
            self._abandon()
            if isinstance(exc, MRBError):
                raise
            if exc.errno in NO_SPACE:
                raise MRBError(
                    f"no space left on the device while writing the score cache {self.segment or self.folder}: "
                    "the scores appended before this batch are kept and the cache stays readable; "
                    "free some space and run again to resume"
                ) from exc
            raise MRBError(f"cannot write the score cache {self.segment or self.folder}: {exc.strerror or exc}") from exc

    def _open(self) -> None:
        make_folder(self.folder)
        meta = self.folder / "key.json"
        if not meta.exists():
            key = {"model": json.loads(self.model.to_json()), "task": self.task}
            atomic_write_bytes(meta, (json.dumps(key, indent=2, sort_keys=True, default=str) + "\n").encode())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.segment = self.folder / f"{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.arrows"
        self._file = open(self.segment, "xb")  # noqa: SIM115
        self._writer = pa.ipc.new_stream(self._file, SCHEMA)

    def _abandon(self) -> None:
        """After a failed write: drop the writer without writing more (the segment keeps what it has)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._writer, self._file = None, None

    def _sync(self) -> None:
        assert self._file is not None
        os.fsync(self._file.fileno())
        self.syncs += 1
        self._unsynced, self._synced_at = 0, time.monotonic()

    def close(self) -> None:
        if self._writer is not None and self._file is not None:
            try:
                self._writer.close()
                self._file.flush()
                self._sync()
            except OSError as exc:
                log.warning("closing score cache segment %s: %s", self.segment, exc)
        self._abandon()


def _read_segment(path: Path) -> Iterator[tuple[pa.RecordBatch, Columns | None]]:
    """Each batch of a segment with its columns as lists, or None when the batch is damaged (its checksum
    does not hold); stops at a torn or damaged message."""
    try:
        source = pa.memory_map(str(path))
        reader = pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError):
        return  # empty, or killed before its header was complete
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as exc:
            left = source.size() - source.tell()
            log.warning(
                "score cache segment %s: the last %d bytes do not read as a batch (a write cut short by a "
                "crash, or damage: %s); the pairs in them are scored again",
                path,
                left,
                exc,
            )
            return
        yield batch, _intact(batch, metadata)


Columns = tuple[list[str], list[str], list[float]]


def _intact(batch: pa.RecordBatch, metadata: Any) -> Columns | None:
    """A batch's columns when it is well-formed, has no nulls and matches the checksum written with it; else None."""
    expected = metadata.get(CHECKSUM_KEY) if metadata is not None else None
    try:
        if expected is None or batch.schema != SCHEMA:
            return None
        batch.validate(full=True)
        if any(column.null_count for column in batch.columns):
            return None
        query_ids, doc_ids, scores = (column.to_pylist() for column in batch.columns)
        return (query_ids, doc_ids, scores) if expected == batch_checksum(query_ids, doc_ids, scores) else None
    except (pa.ArrowException, ValueError, UnicodeDecodeError):
        return None
