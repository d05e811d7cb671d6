"""Build a task's candidate pack from its raw source with a first-stage encoder.

The build has three passes over the source, each streamed in Arrow batches:

1. embed: queries (with the task instruction) and the corpus (without) are embedded shard by
   shard; each shard is written atomically as Parquet (ids + float32 vectors) under the work
   dir, so a killed build resumes at the first missing shard. Under torchrun, rank r embeds
   the corpus shards i with i % WORLD_SIZE == r, and rank 0 goes on once all shards exist.
2. search: an exact top-`depth` per query (`TopK`), ties broken by doc id.
3. write: the candidate documents are read again from the source and the pack is written
   with the sha256 of every file, the retriever, the sample and the first-stage metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from mrb.candidates.encoders import Encoder
from mrb.candidates.search import TopK, sample_queries
from mrb.data import Pack, Record, read_pack, write_pack
from mrb.errors import MRBError
from mrb.evaluation import TaskEvaluator
from mrb.io import atomic_write_bytes, atomic_write_parquet
from mrb.metrics import FIRST_STAGE_PREFIX
from mrb.sources import SourceReader
from mrb.tasks import SampleSpec, TaskSpec, resolve_data_dir

LOG = logging.getLogger(__name__)

SHARD_SIZE = 4096  # records per embedding shard (the unit of resumption)
WRITE_BATCH = 256  # records read from the source at a time while a pack is written
RECALL = "R@100"
WAIT_SECONDS = 5.0  # how often rank 0 looks for the other ranks' shards


@dataclass(frozen=True)
class Rank:
    """This process's place among torchrun's ranks (RANK / WORLD_SIZE), or a lone process."""

    rank: int = 0
    size: int = 1

    @classmethod
    def from_env(cls) -> Rank:
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))

    def owns(self, shard: int) -> bool:
        return shard % self.size == self.rank


def work_root(data_dir: str | Path | None = None) -> Path:
    """Where embedding shards live: ``<data dir>/embeddings/<hub repo>/<fingerprint>/``."""
    return resolve_data_dir(data_dir) / "embeddings"


def _fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _embeddings_table(ids: list[str], vectors: torch.Tensor) -> pa.Table:
    flat = pa.array(vectors.numpy().astype(np.float32, copy=False).ravel())
    return pa.table({"id": pa.array(ids, pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def _read_embeddings(path: Path) -> tuple[pa.Array, np.ndarray]:
    table = pq.read_table(path)
    column = table["embedding"].combine_chunks()
    vectors = np.array(column.flatten().to_numpy(), dtype=np.float32)  # a writable copy for torch
    return table["id"].combine_chunks(), vectors.reshape(len(table), column.type.list_size)


def _records(table: pa.Table) -> list[Record]:
    return [Record(r["id"], r["text"], r["image"]) for r in table.to_pylist()]


def stream_records(tables: Iterable[pa.Table]) -> Iterator[Record]:
    """The records of a stream of reader batches, one batch in memory at a time."""
    for table in tables:
        yield from _records(table)


def embed_prefetched(encoder: Encoder, records: list[Record], instruction: str | None, batch_size: int) -> torch.Tensor:
    """Embed records in batches, preparing the next batch on a worker thread while the current one runs."""
    batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    if not batches:  # a batch whose records were all dropped by the reader
        return torch.empty((0, 1))  # zero rows (Arrow needs a positive width; search skips empty shards)
    vectors = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(encoder.prepare, batches[0], instruction)
        for following in [*batches[1:], None]:
            prepared = ahead.result()
            if following is not None:
                ahead = pool.submit(encoder.prepare, following, instruction)
            vectors.append(encoder.forward(prepared))
    return torch.cat(vectors)


def embed_shards(
    batches: Iterator[pa.Table],
    encoder: Encoder,
    instruction: str | None,
    folder: Path,
    prefix: str,
    *,
    batch_size: int,
    rank: Rank = Rank(),
) -> list[Path]:
    """Embed each Arrow batch into ``<folder>/<prefix>-NNNNNN.parquet`` unless that shard exists
    or belongs to another rank; returns every shard's path in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, table in enumerate(batches):
        path = folder / f"{prefix}-{index:06d}.parquet"
        paths.append(path)
        if path.is_file() or not rank.owns(index):
            continue
        started = time.perf_counter()
        records = _records(table)
        vectors = embed_prefetched(encoder, records, instruction, batch_size)
        atomic_write_parquet(path, _embeddings_table([r.id for r in records], vectors))
        LOG.info("%s: %d records embedded in %.1f s", path.name, len(records), time.perf_counter() - started)
    return paths


def _wait_for(paths: list[Path]) -> None:
    """Block until every shard exists (the other ranks' shards, under torchrun)."""
    missing = [p for p in paths if not p.is_file()]
    while missing:
        LOG.info("waiting for %d shards from the other ranks (%s, …)", len(missing), missing[0].name)
        time.sleep(WAIT_SECONDS)
        missing = [p for p in missing if not p.is_file()]


def search(
    query_ids: list[str],
    queries: torch.Tensor,
    shards: list[Path],
    depth: int,
    *,
    ignore_identical_ids: bool = False,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Exact top-`depth` documents per query over the corpus shards: query_id, doc_id, rank, score.

    Ties are broken by doc id (ascending, byte order); with `ignore_identical_ids` the
    document whose id equals the query id is never returned.
    """
    doc_ids = pa.chunked_array([pq.read_table(p, columns=["id"])["id"] for p in shards], pa.string()).combine_chunks()
    order = pc.sort_indices(doc_ids).to_numpy()
    keys = np.empty(len(order), dtype=np.int64)
    keys[order] = np.arange(len(order))
    exclude = None
    if ignore_identical_ids:
        position = pc.index_in(pa.array(query_ids, pa.string()), value_set=doc_ids).to_numpy(zero_copy_only=False)
        found = ~np.isnan(position.astype(float))
        exclude = torch.full((len(query_ids),), -1, dtype=torch.int64)
        exclude[torch.from_numpy(found)] = torch.from_numpy(keys[position[found].astype(np.int64)])
    top = TopK(queries, depth, exclude=exclude, device=device)
    offset = 0
    for path in shards:
        _, vectors = _read_embeddings(path)
        if len(vectors):
            top.add(torch.from_numpy(vectors), torch.from_numpy(keys[offset : offset + len(vectors)]))
            offset += len(vectors)
    hits = top.result()
    found = np.array([key for row in hits for _, key in row], dtype=np.int64)
    names = iter(pc.take(doc_ids, pa.array(order[found])).to_pylist())  # only the ids retrieved
    rows = [(qid, next(names), rank, score) for qid, row in zip(query_ids, hits) for rank, (score, _) in enumerate(row, start=1)]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"]).astype({"rank": "int32"})


def first_stage_metrics(task: TaskSpec, candidates: pd.DataFrame, qrels: pd.DataFrame) -> dict[str, Any]:
    """The candidate lists' own main metric and Recall@100 (`TaskEvaluator` of the first stage's order, as a run
    reports them), the queries they average over and the pairs."""
    depth = int(candidates["rank"].max()) if len(candidates) else task.depth
    lists = Pack(Path(task.name), {}, {}, candidates, qrels, {"depth": depth})  # the lists alone: no records to check
    evaluator = TaskEvaluator(task.model_copy(update={"depth": min(task.depth, depth)}), lists)
    evaluator.log_set_aside()
    scores = evaluator.first_stage()
    return {
        task.metric: scores.first_stage_value,
        RECALL: scores.measures[f"{FIRST_STAGE_PREFIX}{RECALL}"],
        "queries": scores.n_queries,
        "pairs": len(candidates),
    }


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the pack folder and its first-stage figures."""

    task: str
    pack: Path
    metrics: dict[str, Any]
    seconds: float


def select_queries(qrels: pd.DataFrame, sample: SampleSpec | None) -> list[str] | None:
    """The sampled query ids (draw order), drawn among the queries with a relevant document; None for all."""
    if sample is None:
        return None
    return sample_queries(qrels.loc[qrels["relevance"] > 0, "query_id"], sample.queries, sample.seed)


def build_pack(
    task: TaskSpec,
    encoder: Encoder,
    *,
    retriever: str,
    depth: int | None = None,
    sample: SampleSpec | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 32,
    shard_size: int = SHARD_SIZE,
    work_dir: str | Path | None = None,
    search_device: str | torch.device | None = None,
    rank: Rank | None = None,
    reader: SourceReader | None = None,
) -> BuildResult | None:
    """Build the pack of one task unit (not a composite) and return where it went.

    The pack goes to `out` or the task's pack location, embedding shards to `work_dir` (default
    `work_root`); `depth` defaults to the task's and `sample` to the task's own sample setting.
    `reader` is the task's source, when already opened. Returns None on a rank other than 0,
    which only embeds its share of the corpus. Queries and documents are streamed from the
    source into the pack, so memory does not grow with the size of the corpus.
    """
    started = time.perf_counter()
    rank = rank or Rank.from_env()
    depth = depth or task.depth
    sample = sample or task.sample
    if not encoder.supports(task.type):
        sides = ", ".join(sorted(encoder.sides))
        raise MRBError(f"task {task.name!r} is {task.type.label}: the {retriever} encoder embeds only {sides} sides")
    reader = reader or SourceReader(task, data_dir)
    reader.check()
    selected = select_queries(reader.qrels, sample)
    chosen = None if selected is None else pa.array(selected, pa.string())
    config = {
        "source": reader.provenance(),
        "type": task.type.value,
        "encoder": encoder.settings(),
        "shard_size": shard_size,
    }
    # keyed by source and settings, not by task name: a sampled variant reuses the corpus shards
    folder = Path(work_dir or work_root(data_dir)) / reader.storage_key / _fingerprint(config)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "config.json", (json.dumps(config, indent=2) + "\n").encode())

    corpus_shards = embed_shards(reader.corpus(shard_size), encoder, None, folder, "corpus", batch_size=batch_size, rank=rank)
    if rank.rank != 0:
        return None
    _wait_for(corpus_shards)
    judged = sorted(set(reader.qrels["query_id"]) & set(selected if selected is not None else reader.qrels["query_id"]))
    query_prefix = "queries-" + _fingerprint({"ids": judged, "instruction": task.instruction})
    query_shards = embed_shards(
        reader.queries(shard_size, ids=chosen),
        encoder,
        task.instruction if encoder.uses_instruction else None,
        folder,
        query_prefix,
        batch_size=batch_size,
    )
    embedded = [part for part in map(_read_embeddings, query_shards) if len(part[0])]
    query_ids = [qid for ids, _ in embedded for qid in ids.to_pylist()]
    query_vectors = torch.from_numpy(np.concatenate([v for _, v in embedded])) if embedded else torch.empty(0)
    device = search_device or ("cuda" if torch.cuda.is_available() else "cpu")
    candidates = search(
        query_ids,
        query_vectors,
        corpus_shards,
        depth,
        ignore_identical_ids=task.ignore_identical_ids,
        device=device,
    )
    wanted = pa.array(candidates["doc_id"].unique(), pa.string())
    embedded_ids = pa.array(query_ids, pa.string())
    qrels = reader.qrels[reader.qrels["query_id"].isin(set(query_ids))]
    provenance = {
        "retriever": {"name": retriever, **encoder.settings()},
        "source": reader.provenance(),
        "source_report": reader.report.counts(),
    }
    return _write(
        task,
        stream_records(reader.queries(WRITE_BATCH, ids=embedded_ids)),
        stream_records(reader.corpus(WRITE_BATCH, ids=wanted)),
        candidates,
        qrels,
        provenance,
        depth=depth,
        sample=sample,
        selected=selected,
        out=out,
        data_dir=data_dir,
        started=started,
    )


def _write(
    task: TaskSpec,
    queries: Iterable[Record],
    documents: Iterable[Record],
    candidates: pd.DataFrame,
    qrels: pd.DataFrame,
    provenance: dict[str, Any],
    *,
    depth: int,
    sample: SampleSpec | None,
    selected: list[str] | None,
    out: str | Path | None,
    data_dir: str | Path | None,
    started: float,
) -> BuildResult:
    """Write a pack with its manifest (provenance, sample, first-stage metrics, version, time; `write_pack`
    adds the counts and hashes)."""
    from mrb import __version__

    qrels = qrels.sort_values(["query_id", "doc_id"]).reset_index(drop=True)
    metrics = first_stage_metrics(task, candidates, qrels)
    manifest = {
        "task": task.name,
        "type": task.type.value,
        "instruction": task.instruction,
        "depth": depth,
        **provenance,
        "sample": None
        if sample is None
        else {
            "seed": sample.seed,
            "size": sample.queries,
            "drawn": len(selected or []),
            "ids": selected,
        },
        "ignore_identical_ids": task.ignore_identical_ids,
        "first_stage": metrics,
        "mrb_version": __version__,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    pack = Path(out) / task.name if out is not None else task.pack_location(data_dir)
    write_pack(pack, queries=queries, documents=documents, candidates=candidates, qrels=qrels, manifest=manifest)
    seconds = time.perf_counter() - started
    LOG.info(
        "%s: pack written to %s in %.1f s (%s %.4f, %s %.4f)",
        task.name,
        pack,
        seconds,
        task.metric,
        metrics[task.metric] or 0.0,
        RECALL,
        metrics[RECALL] or 0.0,
    )
    return BuildResult(task.name, pack, metrics, seconds)


def subset_pack(
    full: str | Path,
    task: TaskSpec,
    sample: SampleSpec,
    *,
    retriever: str,
    depth: int | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
) -> BuildResult | None:
    """A sampled task's pack cut from the full task's pack, with no model: the same draw as a
    build from the source (`select_queries`), the same lists truncated to `depth`. None when the
    full pack was built by another retriever, on a sample, or shallower than `depth`."""
    started = time.perf_counter()
    pack = read_pack(full)
    depth = depth or task.depth
    built_by = pack.manifest.get("retriever")
    if (
        pack.manifest.get("sample") is not None
        or pack.manifest.get("depth", 0) < depth
        or not isinstance(built_by, dict)
        or built_by.get("name") != retriever
    ):
        return None
    selected = select_queries(pack.qrels, sample)
    assert selected is not None
    chosen = pack.candidates["query_id"].isin(selected) & (pack.candidates["rank"] <= depth)
    candidates = pack.candidates[chosen].reset_index(drop=True)
    wanted = set(candidates["doc_id"])
    documents = [record for doc_id, record in pack.documents.items() if doc_id in wanted]  # the full pack's order
    provenance = {key: pack.manifest.get(key) for key in ("retriever", "source", "source_report")} | {
        "derived_from": {"task": pack.manifest.get("task"), "sha256": pack.manifest["sha256"]}
    }
    drawn = set(selected)
    return _write(
        task,
        [record for qid, record in pack.queries.items() if qid in drawn],
        documents,
        candidates,
        pack.qrels[pack.qrels["query_id"].isin(selected)],
        provenance,
        depth=depth,
        sample=sample,
        selected=selected,
        out=out,
        data_dir=data_dir,
        started=started,
    )
