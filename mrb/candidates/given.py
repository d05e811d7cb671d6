"""First stages given with the data: the source's own ``top_ranked`` lists (``first_stage: given``), or
a run file (`import_run`: TREC, or Parquet / CSV of ``query_id, doc_id, score[, rank]``).

The lists are checked against the source before anything is written: every line parses, every query
and document exists, no pair is listed twice, ranks are unique and never contradict the scores. Ties
without ranks are broken by doc id, as MRB's own first stage does; lists deeper than the task's depth
are cut to it; lists of queries without qrels are dropped and counted. The pack is then written as a
built pack is (`mrb.candidates.build`): the same files, provenance and first-stage metrics, with the
manifest's ``retriever`` saying where the lists came from.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mrb.candidates.build import WRITE_BATCH, BuildResult, _write, select_queries, stream_records
from mrb.data import sha256_file
from mrb.errors import MRBError
from mrb.sources import SourceReader
from mrb.tasks import GIVEN, SampleSpec, TaskSpec

LOG = logging.getLogger(__name__)

RUN_FORMATS = {".parquet": "parquet", ".csv": "csv"}  # any other suffix: a TREC run
TREC_FIELDS = "query_id Q0 doc_id rank score tag"
IMPORTED = "imported"  # the retriever name of a pack whose lists come from a run file


def run_format(path: Path, format: str | None = None) -> str:
    """The format of a run file: `format`, else from its suffix (``.parquet``, ``.csv``, else TREC)."""
    return format or RUN_FORMATS.get(path.suffix.lower(), "trec")


def read_run(path: str | Path, format: str | None = None) -> pd.DataFrame:
    """A run file as query_id, doc_id, score, rank (nullable: a table may leave ranks out) and ``where``,
    the line or row each entry comes from; an `MRBError` naming the line of any malformed entry."""
    path = Path(path)
    if not path.is_file():
        raise MRBError(f"run file {path} does not exist")
    kind = run_format(path, format)
    if kind == "trec":
        return _read_trec(path)
    try:
        frame = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path, dtype={"query_id": str, "doc_id": str})
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise MRBError(f"run file {path} is not a readable {kind} file ({exc})") from exc
    absent = [c for c in ("query_id", "doc_id", "score") if c not in frame.columns]
    if absent:
        raise MRBError(
            f"run file {path} lacks column(s) {', '.join(absent)} (has {', '.join(map(str, frame.columns))}; "
            "expected query_id, doc_id, score and optionally rank)"
        )
    first = 2 if kind == "csv" else 1  # a CSV's first line is its header
    where = [f"line {i + first}" if kind == "csv" else f"row {i + first}" for i in range(len(frame))]
    out = pd.DataFrame({"query_id": frame["query_id"], "doc_id": frame["doc_id"], "where": where})
    for column in ("score", "rank"):
        if column not in frame.columns:
            out[column] = np.nan
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna() | (column == "rank") & values.notna() & (values != values.round())
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            value = frame[column].iloc[i]
            shown = value.item() if hasattr(value, "item") else value
            raise MRBError(
                f"run file {path}, {where[i]}: {column} {shown!r} is not a {'whole number' if column == 'rank' else 'number'}"
            )
        out[column] = values.astype(float)
    for column in ("query_id", "doc_id"):
        out[column] = out[column].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return out[["query_id", "doc_id", "score", "rank", "where"]]


def _read_trec(path: Path) -> pd.DataFrame:
    """A TREC run (``qid Q0 docid rank score tag``, whitespace-separated; blank lines skipped)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise MRBError(
                    f"run file {path}, line {number}: expected `{TREC_FIELDS}` (6 fields), got {len(fields)}: {line.strip()!r}"
                )
            try:
                rank = int(fields[3])
            except ValueError:
                raise MRBError(f"run file {path}, line {number}: rank {fields[3]!r} is not a whole number") from None
            try:
                score = float(fields[4])
            except ValueError:
                raise MRBError(f"run file {path}, line {number}: score {fields[4]!r} is not a number") from None
            rows.append((fields[0], fields[2], score, float(rank), f"line {number}"))
    if not rows:
        raise MRBError(f"run file {path} holds no entries (expected lines `{TREC_FIELDS}`)")
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "score", "rank", "where"])


def check_lists(lists: pd.DataFrame, reader: SourceReader, origin: str, depth: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Candidate lists (query_id, doc_id, score, rank, where) checked against the source and put in
    first-stage order: returns query_id, doc_id, rank (1, 2, … per query), score and what was changed."""
    task = reader.task.name
    null = lists[["query_id", "doc_id"]].isna().any(axis=1) | (lists["score"].isna() & lists["rank"].isna())
    if null.any():
        raise MRBError(f"task {task!r}: {origin}, {lists['where'][null].iloc[0]}: an entry without query id, doc id or score")
    if not np.isfinite(lists["score"].fillna(0)).all():
        row = lists[~np.isfinite(lists["score"].fillna(0))].iloc[0]
        raise MRBError(f"task {task!r}: {origin}, {row['where']}: score {row['score']} is not finite")
    for column, known, what in (("query_id", reader.query_ids, "queries"), ("doc_id", reader.doc_ids, "corpus")):
        present = pc.is_in(pa.array(lists[column], pa.string()), value_set=known).to_numpy(zero_copy_only=False)
        if not present.all():
            row = lists[~present].iloc[0]
            one = "query" if column == "query_id" else "document"
            raise MRBError(
                f"task {task!r}: {origin}, {row['where']}: {one} {row[column]!r} is not in the {what} of {reader._path}"
            )
    _check_unique(lists, ["query_id", "doc_id"], task, origin, "lists query {0!r}'s document {1!r} twice")
    ranked = lists["rank"].notna()
    if ranked.any() and not ranked.all():
        raise MRBError(
            f"task {task!r}: {origin}, {lists['where'][~ranked].iloc[0]}: an entry without a rank, where others have one"
        )
    changes = {"ties_broken_by_doc_id": 0}
    if ranked.all():
        _check_unique(lists, ["query_id", "rank"], task, origin, "ranks two documents of query {0!r} at {1:g}")
        ordered = lists.sort_values(["query_id", "rank"], kind="stable")
        before = ordered.groupby("query_id", sort=False)[["doc_id", "score", "rank", "where"]].shift()
        rises = ordered["score"] > before["score"]
        if rises.any():
            later, above = ordered[rises].iloc[0], before[rises].iloc[0]
            raise MRBError(
                f"task {task!r}: {origin}, {later['where']}: query {later['query_id']!r} ranks document "
                f"{later['doc_id']!r} at {later['rank']:g} with score {later['score']:g}, above the score "
                f"{above['score']:g} of {above['doc_id']!r} at {above['rank']:g} ({above['where']}): ranks and scores disagree"
            )
    else:  # ranked by score, ties by doc id (ascending), as MRB's own first stage breaks them
        ordered = lists.sort_values(["query_id", "score", "doc_id"], ascending=[True, False, True], kind="stable")
        changes["ties_broken_by_doc_id"] = int(ordered.duplicated(["query_id", "score"]).sum())
    ordered = ordered.assign(rank=ordered.groupby("query_id", sort=False).cumcount() + 1)
    kept = ordered["rank"] <= depth
    changes["cut_below_depth"] = int((~kept).sum())
    ordered = ordered[kept]
    if ordered["score"].isna().any():  # lists without scores (MTEB's top_ranked): n − rank + 1, MTEB's pseudo-score
        length = ordered.groupby("query_id", sort=False)["rank"].transform("max")
        ordered = ordered.assign(score=(length - ordered["rank"] + 1).astype(float))
    candidates = ordered[["query_id", "doc_id", "rank", "score"]].astype({"rank": "int32"}).reset_index(drop=True)
    return candidates, changes


def _check_unique(lists: pd.DataFrame, key: list[str], task: str, origin: str, what: str) -> None:
    """An `MRBError` naming the first entry that repeats the `key` of an earlier one, and that earlier one."""
    again = lists.duplicated(key)
    if again.any():
        second = lists[again].iloc[0]
        first = lists[(lists[key] == second[key]).all(axis=1)].iloc[0]
        raise MRBError(f"task {task!r}: {origin}, {second['where']}: {what.format(*second[key])} (also {first['where']})")


def given_pack(
    task: TaskSpec,
    reader: SourceReader,
    lists: pd.DataFrame,
    origin: dict[str, Any],
    *,
    depth: int | None = None,
    sample: SampleSpec | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    started: float | None = None,
) -> BuildResult:
    """Check candidate lists (`check_lists`) and write them as the task's pack, with the judged queries, the
    listed documents read from the source, and `origin` (where the lists came from) as the retriever."""
    started = time.perf_counter() if started is None else started
    depth = depth or task.depth
    sample = sample or task.sample
    reader.check()
    candidates, changes = check_lists(lists, reader, origin["lists"], depth)
    selected = select_queries(reader.qrels, sample)
    unjudged = ~candidates["query_id"].isin(set(reader.qrels["query_id"]))
    changes["lists_of_queries_without_qrels_dropped"] = int(candidates.loc[unjudged, "query_id"].nunique())
    judged = set(reader.qrels["query_id"]) if selected is None else set(selected)
    # as a build embeds only the queries the reader keeps: one without its side (or whose image does not decode)
    # is dropped, counted in the source report, and neither listed nor judged
    kept = pa.array(sorted(judged), pa.string())
    judged = {qid for batch in reader.queries(WRITE_BATCH, ids=kept) for qid in batch["id"].to_pylist()}
    candidates = candidates[candidates["query_id"].isin(judged)].reset_index(drop=True)
    without = len(judged - set(candidates["query_id"]))
    changes["judged_queries_without_a_list"] = without
    if without:
        LOG.warning("task %s: %d judged queries have no candidate list; they count 0", task.name, without)
    if candidates.empty:
        raise MRBError(f"task {task.name!r}: {origin['lists']} lists none of the queries that have qrels")
    queries = pa.array(sorted(judged), pa.string())
    provenance = {
        "retriever": {**origin, **changes},
        "source": reader.provenance(),
        "source_report": reader.report.counts(),
    }
    return _write(
        task,
        stream_records(reader.queries(WRITE_BATCH, ids=queries)),
        stream_records(reader.corpus(WRITE_BATCH, ids=pa.array(candidates["doc_id"].unique(), pa.string()))),
        candidates,
        reader.qrels[reader.qrels["query_id"].isin(judged)],
        provenance,
        depth=depth,
        sample=sample,
        selected=selected,
        out=out,
        data_dir=data_dir,
        started=started,
    )


def top_ranked_pack(task: TaskSpec, reader: SourceReader, **options: Any) -> BuildResult:
    """The pack of the lists that come with the source (MTEB's ``top_ranked``; ``first_stage: given``)."""
    started = time.perf_counter()
    lists = reader.top_ranked()
    frame = lists.assign(score=np.nan, rank=lists["rank"].astype(float), where=[f"row {r}" for r in lists["row"]])
    origin = {"name": GIVEN, "lists": f"top_ranked of {reader._path}"}
    return given_pack(task, reader, frame[["query_id", "doc_id", "score", "rank", "where"]], origin, started=started, **options)


def import_run(
    task: TaskSpec,
    run: str | Path,
    *,
    format: str | None = None,
    data_dir: str | Path | None = None,
    **options: Any,
) -> BuildResult:
    """The pack of a run file's lists over the task's source (`mrb candidates import`)."""
    started = time.perf_counter()
    if task.parts is not None:
        raise MRBError(f"task {task.name!r} is a composite of {len(task.parts)} parts: a run file gives the lists of one source")
    if task.source is None:
        raise MRBError(f"task {task.name!r} has no source to read the run's queries and documents from")
    run = Path(run)
    lists = read_run(run, format)
    reader = SourceReader(task, data_dir)
    origin = {"name": IMPORTED, "lists": f"run file {run}", "format": run_format(run, format), "sha256": sha256_file(run)}
    return given_pack(task, reader, lists, origin, data_dir=data_dir, started=started, **options)
