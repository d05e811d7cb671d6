"""A pack as an MTEB 2.x reranking dataset (`mrb candidates export --format mteb DIR`).

The folder is laid out as MTEB pushes a retrieval task to the hub and as its RetrievalDatasetLoader
reads it back: a ``README.md`` that declares the configs, and one Parquet file per config and split:
``corpus`` (id, text and/or image), ``queries`` (id, text and/or image), ``default`` (the qrels:
query-id, corpus-id, score) and ``top_ranked`` (query-id, corpus-ids in first-stage order). Images
are HF ``Image`` columns with their encoded bytes. The same folder is a ``mteb2`` source for MRB,
whose ``given`` first stage reads the lists back unchanged.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Features, Image, Sequence, Value

from mrb.data import RECORD_ROW_GROUP, Record, read_pack
from mrb.io import contained
from mrb.tasks import Side, TaskSpec

CONFIGS = ("corpus", "queries", "default", "top_ranked")


def _side_features(side: Side) -> Features:
    columns = {"id": Value("string")}
    if "t" in side:
        columns["text"] = Value("string")
    if "i" in side:
        columns["image"] = Image()
    return Features(columns)


def _record_rows(records: Iterable[Record], side: Side) -> Iterable[dict]:
    for record in records:
        row: dict = {"id": record.id}
        if "t" in side:
            row["text"] = record.text or ""  # MTEB strips every text; a record without one reads "" (MRB: none)
        if "i" in side:
            data = record.encoded_image()
            row["image"] = None if data is None else {"bytes": data, "path": None}
        yield row


def _write_config(path: Path, features: Features, rows: Iterable[dict]) -> None:
    """One config's split as Parquet with the HF features in its schema, `RECORD_ROW_GROUP` rows at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = features.arrow_schema
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict] = []
        written = 0
        for row in rows:
            batch.append(row)
            if len(batch) == RECORD_ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written, batch = written + len(batch), []
        if batch or not written:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def export_mteb(pack_dir: str | Path, task: TaskSpec, out: str | Path) -> Path:
    """Write the pack of one task unit as an MTEB 2.x reranking dataset in ``<out>/<task>``; returns the folder.

    The split is the source's evaluation split (``test`` for a pack without a source). The folder is
    written beside its place and moved there when complete, replacing an earlier export.
    """
    pack = read_pack(pack_dir)
    source = pack.manifest.get("source")
    split = source.get("split", "test") if isinstance(source, dict) else "test"
    target = contained(Path(out), task.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{task.name}.", suffix=".tmp"))
    try:
        files = {config: f"{config}/{split}-00000-of-00001.parquet" for config in CONFIGS}
        query_side, document_side = task.type.query_side, task.type.document_side
        _write_config(
            staging / files["corpus"], _side_features(document_side), _record_rows(pack.documents.values(), document_side)
        )
        _write_config(staging / files["queries"], _side_features(query_side), _record_rows(pack.queries.values(), query_side))
        qrels = Features({"query-id": Value("string"), "corpus-id": Value("string"), "score": Value("int64")})
        _write_config(
            staging / files["default"],
            qrels,
            (
                {"query-id": q, "corpus-id": d, "score": int(r)}
                for q, d, r in pack.qrels[["query_id", "doc_id", "relevance"]].itertuples(index=False)
            ),
        )
        lists = Features({"query-id": Value("string"), "corpus-ids": Sequence(Value("string"))})
        _write_config(
            staging / files["top_ranked"],
            lists,
            (
                {"query-id": qid, "corpus-ids": group["doc_id"].tolist()}
                for qid, group in pack.candidates.groupby("query_id", sort=False)  # read_pack sorts by (query_id, rank)
            ),
        )
        card = {"configs": [{"config_name": c, "data_files": [{"split": split, "path": files[c]}]} for c in CONFIGS]}
        hashes = "\n".join(f"- {name}: {digest}" for name, digest in sorted(pack.manifest["sha256"].items()))
        (staging / "README.md").write_text(
            "---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n\n"
            f"# {task.name}, exported by MRB\n\nThe MRB candidate pack of task {task.name} ({task.type.label}; "
            f"{len(pack.queries)} queries, {len(pack.candidates)} candidates in `top_ranked`) as an MTEB 2.x "
            f"reranking dataset. Pack files (sha256):\n\n{hashes}\n",
            encoding="utf-8",
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
