"""Raw task data from the Hugging Face hub or a local mirror, normalised to MRB records.

Each task's ``source`` names a dataset repo, a pinned revision, an evaluation split and one
of four layouts (`LAYOUTS`). `SourceReader` reads it through ``datasets.load_dataset``:
ids become strings, a document's text is ``title + " " + text`` when it has a title, each
side keeps only the modalities the task type gives it, images stay encoded bytes (decoded
only by `mrb.data.Record.image`), and queries without qrels are dropped and counted.
Corpora are memory-mapped Arrow, iterated in batches, never held as Python objects.

`download` mirrors sources into ``<data dir>/sources/<repo>/<revision>`` with
``huggingface_hub.snapshot_download``; a reader uses the mirror when it holds the revision,
and with ``HF_HUB_OFFLINE=1`` a missing mirror is an `MRBError` naming the fetch command.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from huggingface_hub import is_offline_mode, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image, UnidentifiedImageError

from mrb.data import PACK_FILES
from mrb.errors import MRBError
from mrb.tasks import Side, SourceSpec, TaskSpec, resolve_data_dir

LOG = logging.getLogger(__name__)

RECORD_SCHEMA = PACK_FILES["queries"]  # id, text, image (encoded bytes)
QRELS_COLUMNS = ("query-id", "corpus-id", "score")
EXAMPLES = 5  # ids quoted in a warning


@dataclass(frozen=True)
class Columns:
    """Where one side of a layout lives: its config and the names of its columns."""

    config: str
    id: str
    text: str | None = None
    title: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class LayoutSpec:
    """The configs and columns of one hub layout; qrels always carry `QRELS_COLUMNS`."""

    queries: Columns
    corpus: Columns
    qrels_config: str


LAYOUTS: dict[str, LayoutSpec] = {
    # mteb/arguana, mteb/cqadupstack-english, …: configs corpus (split corpus), queries
    # (split queries), default (qrels per split); ids ``_id``; float scores.
    "beir": LayoutSpec(
        queries=Columns("queries", "_id", text="text"),
        corpus=Columns("corpus", "_id", text="text", title="title"),
        qrels_config="default",
    ),
    # mteb/CQADupstackAndroidRetrieval, mteb/InfoSeekIT2ITRetrieval: configs corpus, queries,
    # qrels, each with the eval split; integer scores; an image column where there are images.
    "mteb": LayoutSpec(
        queries=Columns("queries", "id", text="text", image="image"),
        corpus=Columns("corpus", "id", text="text", title="title", image="image"),
        qrels_config="qrels",
    ),
    # mteb/mbeir_*, izhx/UMRB-*, mteb/flickr30k*: configs query (test), corpus (split corpus),
    # qrels (test, with a Q0 column); text or image may be null per row.
    "mbeir": LayoutSpec(
        queries=Columns("query", "id", text="text", image="image"),
        corpus=Columns("corpus", "id", text="text", image="image"),
        qrels_config="qrels",
    ),
    # mteb/*_beir (ViDoRe): integer ids, queries in ``query``, page screenshots in ``image``.
    "vidore": LayoutSpec(
        queries=Columns("queries", "query-id", text="query"),
        corpus=Columns("corpus", "corpus-id", image="image"),
        qrels_config="qrels",
    ),
}

QUERIES_WITHOUT_QRELS = "queries without qrels (dropped)"
QRELS_UNKNOWN_QUERY = "qrels rows naming a query absent from the queries (dropped)"
QRELS_UNKNOWN_DOCUMENT = "qrels rows naming a document absent from the corpus (kept: relevant but unretrievable)"
QRELS_REPEATED = "repeated qrels pairs (merged, highest relevance kept)"


@dataclass
class SourceReport:
    """Everything a reader dropped, merged or flagged, by kind, with the ids concerned."""

    task: str
    issues: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, ids: Iterable[str]) -> None:
        """Record ids under a kind (once each) and log a warning naming the task, the count and examples."""
        known = set(self.issues.get(kind, ()))
        new = [i for i in dict.fromkeys(ids) if i not in known]
        if not new:
            return
        self.issues.setdefault(kind, []).extend(new)
        more = f", … ({len(new) - EXAMPLES} more)" if len(new) > EXAMPLES else ""
        LOG.warning("task %s: %d %s: %s%s", self.task, len(new), kind, ", ".join(new[:EXAMPLES]), more)

    def counts(self) -> dict[str, int]:
        """Kind → number of ids."""
        return {kind: len(ids) for kind, ids in self.issues.items()}


def mirror_path(source: SourceSpec, data_dir: str | Path | None = None) -> Path:
    """The folder that holds (or will hold) the mirror of one source revision."""
    return resolve_data_dir(data_dir) / "sources" / source.path / source.revision


def _manifest_path(mirror: Path) -> Path:
    return mirror.with_name(mirror.name + ".json")


def download_command(task: TaskSpec, data_dir: str | Path | None = None) -> str:
    """The exact CLI command that mirrors a task's sources into the data dir."""
    target = f" --dir {data_dir}" if data_dir is not None else ""
    return f"mrb download --tasks {task.composite or task.name}{target}"


def download(tasks: Iterable[TaskSpec], dir: str | Path | None = None) -> list[Path]:
    """Mirror the hub sources of the tasks (composites: every part) into the data dir.

    A revision already mirrored completely is left alone; each finished mirror gets a
    manifest listing its files, so a reader can name any file that later goes missing.
    Returns the mirror folders, one per source.
    """
    folders = []
    for task in tasks:
        for unit in task.units():
            if unit.source is None:
                continue  # a task with only a bundled pack has nothing to fetch
            target = mirror_path(unit.source, dir)
            folders.append(target)
            if _missing_files(target) == []:
                continue
            LOG.info("task %s: mirroring %s@%s into %s", unit.name, unit.source.path, unit.source.revision, target)
            try:
                snapshot_download(
                    unit.source.path, repo_type="dataset", revision=unit.source.revision, local_dir=target
                )
            except (HfHubHTTPError, OSError) as exc:
                raise MRBError(
                    f"task {unit.name!r}: cannot fetch {unit.source.path} at revision {unit.source.revision}: {exc}"
                ) from exc
            files = sorted(
                p.relative_to(target).as_posix()
                for p in target.rglob("*")
                if p.is_file() and p.relative_to(target).parts[0] != ".cache"
            )
            manifest = {"repo": unit.source.path, "revision": unit.source.revision, "files": files}
            _manifest_path(target).write_text(json.dumps(manifest, indent=2) + "\n")
    return folders


def _missing_files(mirror: Path) -> list[str] | None:
    """Files a mirror's manifest lists but the folder lacks; None when there is no complete download."""
    manifest = _manifest_path(mirror)
    if not mirror.is_dir() or not manifest.is_file():
        return None
    return [name for name in json.loads(manifest.read_text())["files"] if not (mirror / name).is_file()]


class SourceReader:
    """One task's queries, corpus and qrels, read from the mirror or the hub and normalised.

    Opening checks ids (no nulls, no repeats) and qrels against both sides, and warns
    about every drop through `report`. `queries` and `corpus` then yield Arrow tables with
    `RECORD_SCHEMA`; records that lack what their side needs, or whose image does not
    decode, are dropped there and counted.
    """

    def __init__(self, task: TaskSpec, data_dir: str | Path | None = None):
        if task.source is None:
            what = "a composite: read each of task.units()" if task.parts else "only a pack"
            raise MRBError(f"task {task.name!r} has no hub source ({what})")
        self.task = task
        self.source = task.source
        self.layout = LAYOUTS[task.source.layout]
        self.report = SourceReport(task.name)
        self._explicit_dir = data_dir
        self._data_dir = resolve_data_dir(data_dir)
        self._path, self._revision, self._cache_dir = self._locate()

    def _locate(self) -> tuple[str, str | None, str | None]:
        """What `load_dataset` reads: the mirror folder when present, else the hub repo at its revision."""
        mirror = mirror_path(self.source, self._data_dir)
        command = download_command(self.task, self._explicit_dir)
        missing = _missing_files(mirror)
        if missing:
            raise MRBError(
                f"task {self.task.name!r}: the mirror {mirror} lacks {', '.join(missing)}; fetch it again with `{command}`"
            )
        if missing == []:
            # one Arrow cache per repo: `datasets` keys a local folder's cache by its name (the revision) only
            return str(mirror), None, str(self._data_dir / "arrow" / self.source.path)
        if mirror.is_dir():
            raise MRBError(
                f"task {self.task.name!r}: the mirror {mirror} is incomplete (no {_manifest_path(mirror).name}); "
                f"fetch it again with `{command}`"
            )
        if is_offline_mode():
            held = sorted(p.name for p in mirror.parent.glob("*") if p.is_dir())
            has = f" (it holds revision {', '.join(held)})" if held else ""
            raise MRBError(
                f"task {self.task.name!r}: {self.source.path} at revision {self.source.revision} is not in the "
                f"mirror {mirror.parent}{has} and HF_HUB_OFFLINE=1 forbids fetching it; run `{command}`"
            )
        return self.source.path, self.source.revision, None

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Turn the errors of `datasets` into `MRBError`s that name the task and what it reads."""
        try:
            yield
        except (ConnectionError, datasets.exceptions.DatasetsError, FileNotFoundError) as exc:
            raise MRBError(
                f"task {self.task.name!r}: cannot read {what} of {self._path}: {exc}; "
                f"to mirror the data run `{download_command(self.task, self._explicit_dir)}`"
            ) from exc

    @cached_property
    def _configs(self) -> list[str]:
        with self._reading("the list of configs"):
            return datasets.get_dataset_config_names(self._path, revision=self._revision)

    def _load(self, config: str) -> datasets.Dataset:
        """One config's split: the eval split when the config has it, else its only split."""
        if config not in self._configs:
            raise MRBError(
                f"task {self.task.name!r}: {self._path} has no config {config!r} "
                f"(layout {self.source.layout!r} expects it; the dataset has {', '.join(self._configs)})"
            )
        with self._reading(f"config {config!r}"):
            splits = datasets.get_dataset_split_names(
                self._path, config, revision=self._revision, cache_dir=self._cache_dir
            )
            if self.source.split in splits:
                split = self.source.split
            elif len(splits) == 1:
                split = splits[0]
            else:
                raise MRBError(
                    f"task {self.task.name!r}: config {config!r} of {self._path} has no split "
                    f"{self.source.split!r} (it has {', '.join(splits)})"
                )
            return datasets.load_dataset(
                self._path, config, split=split, revision=self._revision, cache_dir=self._cache_dir
            )

    def _side_dataset(self, role: str, columns: Columns, side: Side) -> datasets.Dataset:
        """A side's config with just the columns the task's side needs."""
        dataset = self._load(columns.config)
        wanted = {"id": columns.id}
        if "t" in side:
            wanted["text"] = columns.text
            if columns.title in dataset.column_names:
                wanted["title"] = columns.title
        if "i" in side:
            wanted["image"] = columns.image
        absent = [column or purpose for purpose, column in wanted.items() if column not in dataset.column_names]
        if absent:
            raise MRBError(
                f"task {self.task.name!r}: the {role} of {self._path} (config {columns.config!r}) lack column(s) "
                f"{', '.join(absent)} needed for a {self.task.type.label} task "
                f"(columns: {', '.join(dataset.column_names)})"
            )
        return dataset.select_columns(list(wanted.values()))

    def _ids(self, dataset: datasets.Dataset, columns: Columns, role: str) -> pa.Array:
        """A side's ids as strings; an `MRBError` on a null or repeated id."""
        ids = pc.cast(dataset.with_format("arrow")[columns.id], pa.string()).combine_chunks()
        if ids.null_count:
            raise MRBError(f"task {self.task.name!r}: the {role} of {self._path} have a row with a null id")
        counts = pc.value_counts(ids)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        if len(repeated):
            raise MRBError(f"task {self.task.name!r}: the {role} of {self._path} repeat id {repeated[0].as_py()!r}")
        return ids

    @cached_property
    def _queries(self) -> datasets.Dataset:
        return self._side_dataset("queries", self.layout.queries, self.task.type.query_side)

    @cached_property
    def _corpus(self) -> datasets.Dataset:
        return self._side_dataset("corpus", self.layout.corpus, self.task.type.document_side)

    @cached_property
    def qrels(self) -> pd.DataFrame:
        """Graded qrels (query_id, doc_id, relevance) of the queries that exist, checked against the corpus.

        Reading them opens all three configs and checks ids on both sides, so every
        structural error surfaces before a long pass over the corpus.
        """
        dataset = self._load(self.layout.qrels_config)
        absent = [c for c in QRELS_COLUMNS if c not in dataset.column_names]
        if absent:
            raise MRBError(
                f"task {self.task.name!r}: the qrels of {self._path} lack column(s) {', '.join(absent)} "
                f"(columns: {', '.join(dataset.column_names)})"
            )
        table = dataset.with_format("arrow")[:]
        frame = pd.DataFrame(
            {
                "query_id": pc.cast(table["query-id"], pa.string()).to_pandas(),
                "doc_id": pc.cast(table["corpus-id"], pa.string()).to_pandas(),
                "score": pc.cast(table["score"], pa.float64()).to_pandas(),
            }
        )
        if frame.isna().any().any():
            row = frame[frame.isna().any(axis=1)].iloc[0]
            raise MRBError(
                f"task {self.task.name!r}: a qrels row of {self._path} has a null value "
                f"(query {row.query_id!r}, doc {row.doc_id!r}, score {row.score})"
            )
        fractional = frame[frame["score"] != frame["score"].round()]
        if len(fractional):
            row = fractional.iloc[0]
            raise MRBError(
                f"task {self.task.name!r}: qrels score {row.score} (query {row.query_id!r}, doc {row.doc_id!r}) "
                "is not a whole relevance grade"
            )
        self._check_size("qrels", len(frame))
        frame["relevance"] = frame.pop("score").astype("int32")
        pairs = frame[["query_id", "doc_id"]]
        self.report.add(QRELS_REPEATED, (f"{q}/{d}" for q, d in pairs[pairs.duplicated()].itertuples(index=False)))
        frame = frame.sort_values("relevance", ascending=False, kind="stable").drop_duplicates(["query_id", "doc_id"])
        frame = frame.sort_index()

        known = frame["query_id"].isin(self._query_ids.to_pandas())
        self.report.add(QRELS_UNKNOWN_QUERY, frame.loc[~known, "query_id"])
        frame = frame[known]
        in_corpus = pc.is_in(pa.array(frame["doc_id"], pa.string()), value_set=self._doc_ids).to_numpy(zero_copy_only=False)
        self.report.add(QRELS_UNKNOWN_DOCUMENT, frame.loc[~in_corpus, "doc_id"])
        self._check_size("documents", len(self._doc_ids))

        judged = pc.is_in(self._query_ids, value_set=pa.array(frame["query_id"].unique(), pa.string()))
        self.report.add(QUERIES_WITHOUT_QRELS, pc.filter(self._query_ids, pc.invert(judged)).to_pylist())
        self._check_size("queries", pc.sum(judged).as_py() or 0)
        if frame.empty:
            raise MRBError(f"task {self.task.name!r}: no qrels row of {self._path} names a known query")
        return frame.reset_index(drop=True)[["query_id", "doc_id", "relevance"]]

    @cached_property
    def _query_ids(self) -> pa.Array:
        return self._ids(self._queries, self.layout.queries, "queries")

    @cached_property
    def _doc_ids(self) -> pa.Array:
        return self._ids(self._corpus, self.layout.corpus, "corpus")

    def _check_size(self, what: str, count: int) -> None:
        declared = getattr(self.task.sizes, what, None)
        if declared is not None and declared != count:
            LOG.warning("task %s: read %d %s, the catalogue declares %d", self.task.name, count, what, declared)

    def queries(self, batch_size: int = 1024) -> Iterator[pa.Table]:
        """The queries that have qrels, normalised, in batches."""
        judged = pa.array(self.qrels["query_id"].unique(), pa.string())
        for batch in self._queries.with_format("arrow").iter(batch_size=batch_size):
            batch = batch.filter(pc.is_in(pc.cast(batch[self.layout.queries.id], pa.string()), value_set=judged))
            yield self._normalise(batch, self.layout.queries, self.task.type.query_side, "queries")

    def check(self) -> SourceReport:
        """Open the three configs and run every check that needs no pass over the records."""
        self.qrels  # noqa: B018 (a cached property that does the checking)
        return self.report

    def corpus(self, batch_size: int = 4096, ids: pa.Array | None = None) -> Iterator[pa.Table]:
        """Every corpus document (or those of `ids`, picked before their images are checked), normalised,
        in batches (after `check`)."""
        self.check()
        for batch in self._corpus.with_format("arrow").iter(batch_size=batch_size):
            if ids is not None:
                batch = batch.filter(pc.is_in(pc.cast(batch[self.layout.corpus.id], pa.string()), value_set=ids))
            yield self._normalise(batch, self.layout.corpus, self.task.type.document_side, "documents")

    def _normalise(self, batch: pa.Table, columns: Columns, side: Side, role: str) -> pa.Table:
        """Map one batch to `RECORD_SCHEMA` for the task's side; drop (and count) unusable records."""
        ids = pc.cast(batch[columns.id], pa.string())
        text = pa.nulls(batch.num_rows, pa.string())
        if "t" in side:
            text = _blank_to_null(pc.cast(batch[columns.text], pa.string()))
            if columns.title in batch.column_names:
                title = _blank_to_null(pc.cast(batch[columns.title], pa.string()))
                # "title text", else whichever exists (join's null_handling="skip" loses all-null rows)
                text = pc.coalesce(pc.binary_join_element_wise(title, text, " "), text, title)
        image = pa.nulls(batch.num_rows, pa.binary())
        decodes = pa.array([True] * batch.num_rows, pa.bool_())
        if "i" in side:
            image = pc.cast(pc.struct_field(batch[columns.image], "bytes"), pa.binary())
            decodes = pa.array([data is None or _decodes(data) for data in image.to_pylist()], pa.bool_())
        has_text, has_image = pc.is_valid(text), pc.is_valid(image)
        usable = {"t": has_text, "i": has_image, "it": pc.or_(has_text, has_image)}[side]
        needs = {"t": "text", "i": "an image", "it": "text or image"}[side]
        self.report.add(f"{role} without {needs} (dropped)", pc.filter(ids, pc.invert(usable)).to_pylist())
        self.report.add(f"{role} whose image does not decode (dropped)", pc.filter(ids, pc.invert(decodes)).to_pylist())
        table = pa.table([ids, text, image], schema=RECORD_SCHEMA)
        return table.filter(pc.and_(usable, decodes))


def _blank_to_null(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.if_else(pc.equal(pc.utf8_trim_whitespace(values), ""), pa.scalar(None, pa.string()), values)


def _decodes(data: bytes) -> bool:
    """Whether bytes are an image PIL can open and verify (no pixel decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
    return True
