"""Records and packs: the per-task data unit MRB reranks.

A pack is one folder holding ``queries.parquet`` (id, text, image), ``documents.parquet``
(id, text, image), ``candidates.parquet`` (query_id, doc_id, rank, score),
``qrels.parquet`` (query_id, doc_id, relevance) and ``manifest.json`` (provenance and the
sha256 of every file). Images are stored as encoded bytes and decoded only when a reranker
asks for them.

`read_pack` streams each records file once and moves the encoded images into an `ImageStore`
(an unlinked temporary file under ``$TMPDIR``), so a pack in memory holds ids, texts and
offsets; an image's bytes are read back (``os.pread``) when a reranker or the runner needs
them, and memory does not grow with the size of the corpus.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mrb.errors import MRBError
from mrb.io import make_folder, os_error


class ImageStore:
    """Encoded images kept in an unlinked temporary file and read back on demand (thread-safe reads).

    The file goes away when the last `StoredImage` that refers to it does (or with the process).
    """

    def __init__(self, origin: str) -> None:
        self.origin = origin  # the file the images came from, for error messages
        self._file: BinaryIO | None = None  # created with the first image
        self._size = 0

    def add(self, data: bytes | pa.Buffer) -> StoredImage:
        """Append one encoded image; `finish` must be called before any is read."""
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="mrb-images-")  # noqa: SIM115 (lives as long as the store)
            self._file.write(data)
        except OSError as exc:
            raise self._cannot_write(exc) from exc
        image = StoredImage(self, self._size, len(data))
        self._size += len(data)
        return image

    def finish(self) -> None:
        try:
            if self._file is not None:
                self._file.flush()
        except OSError as exc:
            raise self._cannot_write(exc) from exc

    def _cannot_write(self, exc: OSError) -> MRBError:
        return MRBError(
            f"{self.origin}: cannot keep its images in the temporary folder {tempfile.gettempdir()} ({exc}); "
            "free space there or point TMPDIR at a larger disk"
        )

    def read(self, image: StoredImage) -> bytes:
        assert self._file is not None
        data = os.pread(self._file.fileno(), image.length, image.offset)
        if len(data) != image.length:
            raise MRBError(f"{self.origin}: a stored image was cut short ({len(data)} of {image.length} bytes)")
        return data


@dataclass(frozen=True, slots=True)
class StoredImage:
    """Where one encoded image lies in an `ImageStore`."""

    store: ImageStore
    offset: int
    length: int

    def read(self) -> bytes:
        return self.store.read(self)


class ImageSource(Protocol):
    """Where a record's `image()` comes from when it is not decoded on the spot (the runner's per-task cache)."""

    def image(self, record: Record, max_pixels: int | None, role: str) -> Image.Image | None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One query or document: an id, optional text and an optional encoded image.

    The image is either in memory (`image_bytes`) or, for records read from a pack, on disk
    (`stored_image`); `has_image` and `encoded_image()` serve both. A record may carry an image
    `source` (the runner gives each task's records its image cache); `image()` then goes through it.
    """

    id: str
    text: str | None = None
    image_bytes: bytes | None = None
    stored_image: StoredImage | None = field(default=None, repr=False)
    source: ImageSource | None = field(default=None, compare=False, repr=False)

    @property
    def has_image(self) -> bool:
        return self.image_bytes is not None or self.stored_image is not None

    def encoded_image(self) -> bytes | None:
        """The encoded image bytes (read from disk for a stored image), or None."""
        if self.stored_image is not None:
            return self.stored_image.read()
        return self.image_bytes

    def with_source(self, source: ImageSource | None) -> Record:
        """This record with its images served by `source`."""
        return replace(self, source=source)

    def image(self, max_pixels: int | None = None, role: str = "record") -> Image.Image | None:
        """The image (RGB) within `max_pixels` (see `decode_image`), or None when the record has none: from its
        source when it has one, else decoded here. An error names the record as `role` (query, document)."""
        if self.source is not None:
            return self.source.image(self, max_pixels, role)
        return self.decode(max_pixels, role)

    def decode(self, max_pixels: int | None = None, role: str = "record") -> Image.Image | None:
        """Decode the image from its bytes, whatever the source."""
        data = self.encoded_image()
        if data is None:
            return None
        try:
            return decode_image(data, max_pixels)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            origin = f"{self.stored_image.store.origin}: " if self.stored_image is not None else ""
            raise MRBError(f"{origin}{role} {self.id!r}: image does not decode ({exc})") from exc


_PIXEL_LIMIT = threading.Lock()  # held while PIL's process-wide MAX_IMAGE_PIXELS is lifted


def open_image(data: bytes) -> tuple[Image.Image, int | None]:
    """The image opened lazily (header read, pixels not decoded) whatever its size, and PIL's pixel limit,
    which the caller enforces: PIL's own guard is lifted for the open only, under a lock."""
    with _PIXEL_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data)), limit
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def decode_image(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """Decode encoded image bytes as RGB, never holding more than PIL's pixel limit decoded.

    An image over that limit (a decompression bomb, or a 20000×20000 scan) is decoded at reduced size to
    about `max_pixels` where its format allows it (JPEG's draft mode), then box-reduced; any other is
    refused with `Image.DecompressionBombError`, as is every such image without `max_pixels`.
    """
    img, limit = open_image(data)
    with img:
        width, height = img.size
        pixels = width * height
        if limit is None or pixels <= limit:
            return img.convert("RGB")
        too_big = f"{width}×{height} {img.format or 'image'} has {pixels} pixels, over the limit of {limit}"
        if max_pixels is None:
            raise Image.DecompressionBombError(too_big)
        scale = math.sqrt(max_pixels / pixels)
        img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        if img.width * img.height > limit:
            raise Image.DecompressionBombError(f"{too_big}, and {img.format or 'this format'} cannot be decoded at reduced size")
        return img.reduce(max(1, math.floor(math.sqrt(img.width * img.height / max_pixels)))).convert("RGB")


@dataclass(frozen=True, slots=True)
class Pair:
    """What a reranker scores: the task instruction, a query and one candidate document."""

    instruction: str
    query: Record
    document: Record


RECORD_ROW_GROUP = 256  # rows per Parquet row group in queries/documents files (images make rows large)
RECORD_BATCH = 64  # rows read at a time from queries/documents files
PACK_FILES: dict[str, pa.Schema] = {
    "queries": pa.schema([("id", pa.string()), ("text", pa.string()), ("image", pa.binary())]),
    "documents": pa.schema([("id", pa.string()), ("text", pa.string()), ("image", pa.binary())]),
    "candidates": pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("rank", pa.int32()), ("score", pa.float64())]),
    "qrels": pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("relevance", pa.int32())]),
}


@dataclass
class Pack:
    """A task's data: records by id, candidate lists (first-stage order) and graded qrels."""

    path: Path
    queries: dict[str, Record]
    documents: dict[str, Record]
    candidates: pd.DataFrame  # query_id, doc_id, rank, score; sorted by (query_id, rank)
    qrels: pd.DataFrame  # query_id, doc_id, relevance
    manifest: dict[str, Any]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _open(folder: Path, name: str, **options: Any) -> pq.ParquetFile:
    """Open a pack file (`options` go to `pq.ParquetFile`) and check its columns from the footer."""
    path = folder / f"{name}.parquet"
    if not path.is_file():
        raise MRBError(f"pack {folder}: missing file {path.name}")
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True, **options)
    except (pa.ArrowException, OSError) as exc:
        raise MRBError(f"pack {folder}: {path.name} is not a readable Parquet file ({exc})") from exc
    expected = PACK_FILES[name]
    columns = parquet.schema_arrow.names
    missing = [f.name for f in expected if f.name not in columns]
    if missing:
        raise MRBError(
            f"pack {folder}: {path.name} lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(columns)}; expected {', '.join(expected.names)})"
        )
    return parquet


def _typed(table: pa.Table, folder: Path, name: str) -> pa.Table:
    try:
        return table.cast(PACK_FILES[name])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MRBError(f"pack {folder}: {name}.parquet has a column of the wrong type ({exc})") from exc


def _damaged(folder: Path, name: str, exc: Exception) -> MRBError:
    return MRBError(
        f"pack {folder}: {name}.parquet is damaged: a page does not read back ({exc}); rebuild or re-download the pack"
    )


def _read_table(folder: Path, name: str) -> pa.Table:
    parquet = _open(folder, name)
    try:
        table = parquet.read(columns=PACK_FILES[name].names)
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(folder, name, exc) from exc
    return _typed(table, folder, name)


def check_id(value: str, where: str) -> None:
    """A query or document id must be a non-empty printable string without whitespace: TREC run files
    (``qid Q0 docid rank score tag``) split on whitespace, and MTEB keys results by these ids."""
    if not value or not value.isprintable() or any(c.isspace() for c in value):
        raise MRBError(
            f"{where}: id {value!r} cannot be written to a TREC run file or an MTEB dataset "
            "(ids must be non-empty, printable and free of whitespace)"
        )


def _records(folder: Path, name: str) -> dict[str, Record]:
    """Records by id, streamed in small row batches; their images go to an `ImageStore` on disk.

    One thread, no read-ahead and handing freed memory back after each batch of images keep the
    Parquet reader's own memory to about one batch, whatever the size of the file.
    """
    out: dict[str, Record] = {}
    store = ImageStore(f"pack {folder}: {name}.parquet")
    parquet = _open(folder, name, pre_buffer=False, buffer_size=1 << 20)
    batches = parquet.iter_batches(batch_size=RECORD_BATCH, columns=PACK_FILES[name].names, use_threads=False)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except (pa.ArrowException, OSError) as exc:
            raise _damaged(folder, name, exc) from exc
        table = _typed(pa.Table.from_batches([batch]), folder, name)
        images = table.column("image").combine_chunks()
        for i, (rid, text) in enumerate(zip(table.column("id").to_pylist(), table.column("text").to_pylist())):
            if rid is None:
                raise MRBError(f"pack {folder}: {name}.parquet has a row with a null id")
            if rid in out:
                raise MRBError(f"pack {folder}: {name}.parquet repeats id {rid!r}")
            check_id(rid, f"pack {folder}: {name}.parquet")
            image = images[i]
            if text is None and not image.is_valid:
                raise MRBError(f"pack {folder}: {name}.parquet record {rid!r} has neither text nor image")
            out[rid] = Record(rid, text, stored_image=store.add(image.as_buffer()) if image.is_valid else None)
        if images.null_count < len(images):
            del batch, table, images
            # Arrow's allocator keeps freed pages for reuse; batch after batch of images they would pile up
            pa.default_memory_pool().release_unused()
    store.finish()
    return out


def read_pack(folder: str | Path) -> Pack:
    """Read and validate a pack folder; every inconsistency is an `MRBError` naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MRBError(f"pack folder {folder} does not exist")
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise MRBError(f"pack {folder}: missing file manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MRBError(f"pack {folder}: manifest.json is not valid JSON ({exc})") from exc
    check_manifest(folder, manifest)
    verify_pack(folder, manifest)
    queries = _records(folder, "queries")
    documents = _records(folder, "documents")
    candidates = _read_table(folder, "candidates").to_pandas()
    qrels = _read_table(folder, "qrels").to_pandas()
    _check_candidates(folder, candidates, queries, documents)
    _check_qrels(folder, qrels, queries)
    candidates = candidates.sort_values(["query_id", "rank"], kind="stable").reset_index(drop=True)
    return Pack(folder, queries, documents, candidates, qrels, manifest)


class PackManifest(BaseModel):
    """What MRB reads from a pack's manifest.json; builders add provenance of their own (kept as it is)."""

    model_config = ConfigDict(extra="allow")

    sha256: dict[str, str]
    task: str | None = None
    type: str | None = None
    instruction: str | None = None
    depth: int | None = Field(default=None, gt=0)
    mrb_version: str | None = None


def check_manifest(folder: Path, manifest: Any) -> None:
    """An `MRBError` naming the pack and the key when manifest.json does not have the shape of `PackManifest`."""
    if not isinstance(manifest, dict):
        raise MRBError(f"pack {folder}: manifest.json is not a JSON object")
    if "sha256" not in manifest:
        raise MRBError(f"pack {folder}: manifest.json has no sha256 of the pack files")
    try:
        PackManifest(**manifest)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise MRBError(f"pack {folder}: manifest.json: {problems}") from None


def verify_pack(folder: Path, manifest: dict[str, Any]) -> None:
    """Re-hash every pack file; an `MRBError` names the first file missing from, or differing from, the manifest."""
    hashes = manifest.get("sha256")
    if not isinstance(hashes, dict):
        raise MRBError(f"pack {folder}: manifest.json has no sha256 of the pack files")
    for name in PACK_FILES:
        filename = f"{name}.parquet"
        if filename not in hashes:
            raise MRBError(f"pack {folder}: manifest.json has no sha256 for {filename}")
        path = folder / filename
        if not path.is_file():
            raise MRBError(f"pack {folder}: missing file {filename}")
        actual = sha256_file(path)
        if actual != hashes[filename]:
            raise MRBError(
                f"pack {folder}: {filename} does not match manifest.json (sha256 {actual}, expected "
                f"{hashes[filename]}): the file changed after the pack was built"
            )


def _check_candidates(folder: Path, cands: pd.DataFrame, queries: dict, documents: dict) -> None:
    if cands[["query_id", "doc_id", "rank"]].isna().any().any():
        raise MRBError(f"pack {folder}: candidates.parquet has null query_id, doc_id or rank")
    unknown_q = sorted(set(cands["query_id"]) - queries.keys())
    if unknown_q:
        raise MRBError(f"pack {folder}: candidates.parquet names query id {unknown_q[0]!r} absent from queries.parquet")
    unknown_d = cands.loc[~cands["doc_id"].isin(documents.keys())]
    if len(unknown_d):
        row = unknown_d.iloc[0]
        raise MRBError(
            f"pack {folder}: candidate doc id {row.doc_id!r} (query {row.query_id!r}) is absent from documents.parquet"
        )
    dup = cands.duplicated(["query_id", "doc_id"], keep=False)
    if dup.any():
        row = cands.loc[dup].iloc[0]
        raise MRBError(f"pack {folder}: duplicate candidate entry: query {row.query_id!r}, doc {row.doc_id!r}")
    dup_rank = cands.duplicated(["query_id", "rank"], keep=False)
    if dup_rank.any():
        row = cands.loc[dup_rank].iloc[0]
        raise MRBError(f"pack {folder}: query {row.query_id!r} has two candidates at rank {row['rank']}")


def _check_qrels(folder: Path, qrels: pd.DataFrame, queries: dict) -> None:
    if qrels.isna().any().any():
        raise MRBError(f"pack {folder}: qrels.parquet has null values")
    dup = qrels.duplicated(["query_id", "doc_id"], keep=False)
    if dup.any():
        row = qrels.loc[dup].iloc[0]
        raise MRBError(f"pack {folder}: qrels.parquet judges query {row.query_id!r}, doc {row.doc_id!r} twice")
    unknown = sorted(set(qrels["query_id"]) - queries.keys())
    if unknown:
        raise MRBError(f"pack {folder}: qrels.parquet names query id {unknown[0]!r} absent from queries.parquet")


def write_pack(
    folder: str | Path,
    *,
    queries: Iterable[Record],
    documents: Iterable[Record],
    candidates: pd.DataFrame,
    qrels: pd.DataFrame,
    manifest: dict[str, Any],
) -> Path:
    """Write a pack folder; the manifest gets the row count (`counts`) and sha256 of every file.

    `queries` and `documents` may be any iterables (generators included): records are written
    `RECORD_ROW_GROUP` at a time as they come, so memory holds one row group of images, not
    the corpus. Everything is written into a staging folder beside `folder` first and checked
    (ids unique, every candidate's query and document and every judged query written); only a complete pack replaces
    the files of `folder`, and an error leaves it as it was.
    """
    folder = Path(folder)
    try:
        make_folder(folder.parent)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    except OSError as exc:
        raise os_error(folder, exc, "write the pack") from exc
    try:
        written = {
            name: _write_records(staging, folder, name, records)
            for name, records in (("queries", queries), ("documents", documents))
        }
        for column, name, one in (("query_id", "queries", "query"), ("doc_id", "documents", "document")):
            unknown = candidates.loc[~candidates[column].isin(written[name]), ["query_id", "doc_id"]]
            if len(unknown):
                query, doc = unknown.iloc[0]
                raise MRBError(
                    f"cannot write pack {folder}: candidate (query {query!r}, doc {doc!r}) names a {one} "
                    f"that {name}.parquet lacks"
                )
        unjudged = qrels.loc[~qrels["query_id"].isin(written["queries"]), "query_id"]
        if len(unjudged):  # what read_pack would refuse
            raise MRBError(f"cannot write pack {folder}: qrels name query {unjudged.iloc[0]!r}, which queries.parquet lacks")
        counts = {name: len(ids) for name, ids in written.items()}
        for name, frame in (("candidates", candidates), ("qrels", qrels)):
            schema = PACK_FILES[name]
            table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
            with _synced(staging / f"{name}.parquet") as fh:
                pq.write_table(table, fh, write_page_checksum=True)
            counts[name] = len(frame)
        hashes = {f"{name}.parquet": sha256_file(staging / f"{name}.parquet") for name in PACK_FILES}
        with _synced(staging / "manifest.json") as fh:
            fh.write((json.dumps({**manifest, "counts": counts, "sha256": hashes}, indent=2) + "\n").encode())
        _move_into(staging, folder)
    except OSError as exc:  # a full disk, most often: one error naming the pack, which stays as it was
        raise os_error(folder, exc, "write the pack") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


@contextmanager
def _synced(path: Path) -> Iterator[BinaryIO]:
    """A new file, flushed and fsynced when the block ends."""
    with open(path, "wb") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def _write_records(staging: Path, folder: Path, name: str, records: Iterable[Record]) -> set[str]:
    """Stream records into ``<staging>/<name>.parquet`` in row groups of `RECORD_ROW_GROUP`; returns their ids.

    Small row groups also let `read_pack` stream the records back instead of inflating a whole column.
    """
    schema = PACK_FILES[name]
    ids: set[str] = set()
    rows: dict[str, list] = {"id": [], "text": [], "image": []}
    with _synced(staging / f"{name}.parquet") as fh, pq.ParquetWriter(fh, schema, write_page_checksum=True) as writer:
        for record in records:
            check_id(record.id, f"pack {folder}: {name}")
            if record.id in ids:
                raise MRBError(f"cannot write pack {folder}: {name}.parquet would repeat id {record.id!r}")
            image = record.encoded_image()
            if record.text is None and image is None:
                raise MRBError(f"cannot write pack {folder}: {name} record {record.id!r} has neither text nor image")
            ids.add(record.id)
            for column, value in (("id", record.id), ("text", record.text), ("image", image)):
                rows[column].append(value)
            if len(rows["id"]) == RECORD_ROW_GROUP:
                writer.write_table(pa.table(rows, schema=schema))
                rows = {column: [] for column in rows}
        if rows["id"] or not ids:
            writer.write_table(pa.table(rows, schema=schema))
    return ids


def _move_into(staging: Path, folder: Path) -> None:
    """Replace the pack files of `folder` by the staged ones: the old manifest goes first and the new one
    comes last, so a pack caught half-way has no manifest and is never read as complete."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    for name in PACK_FILES:
        os.replace(staging / f"{name}.parquet", folder / f"{name}.parquet")
    os.replace(staging / "manifest.json", folder / "manifest.json")
