"""Raw task data from the Hugging Face hub, a local mirror or a local folder, normalised to MRB records.

Each task's ``source`` names a layout (`LAYOUTS`), an evaluation split and either a hub dataset
at a pinned revision or a local folder. `SourceReader` reads it through ``datasets``: ids
become strings, a document's text is ``title + " " + text`` when it has a title, each side keeps
only the modalities the task type gives it, images stay encoded bytes (decoded only by
`mrb.data.Record.image`), and queries without qrels are dropped and counted. Corpora are
memory-mapped Arrow, iterated in batches, never held as Python objects.

A local folder holds one config per entry, ``<config>/`` (Parquet or JSON Lines files whose names
give the splits, or a ``save_to_disk`` folder) or ``<config>.parquet`` / ``<config>.jsonl``, or it
declares its configs in a ``README.md`` as a hub dataset does. Its revision is the sha256 of its
files (`folder_digest`). Images may be embedded bytes or paths of image files inside the folder.
Your own data is held to stricter rules than the hub's: an image that does not decode is an
error naming the record and the file, not a dropped record.

`download` mirrors hub sources into ``<data dir>/sources/<repo>/<revision>`` with
``huggingface_hub.snapshot_download``; a reader uses the mirror when it holds the revision,
and with ``HF_HUB_OFFLINE=1`` a missing mirror is an `MRBError` naming the fetch command.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import yaml
from huggingface_hub import is_offline_mode, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.repocard import metadata_load
from PIL import Image, UnidentifiedImageError

from mrb.data import PACK_FILES, check_id
from mrb.errors import MRBError, hub_failure
from mrb.tasks import Side, SourceSpec, TaskSpec, resolve_data_dir

LOG = logging.getLogger(__name__)

RECORD_SCHEMA = PACK_FILES["queries"]  # id, text, image (encoded bytes)
QRELS_COLUMNS = ("query-id", "corpus-id", "score")
TOP_RANKED_COLUMNS = ("query-id", "corpus-ids")
EXAMPLES = 5  # ids quoted in a warning
DATA_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}  # local data files → datasets builder
ONLY_SPLIT = "train"  # what `datasets` calls the split of data files whose names name none
ONE = {"queries": "query", "documents": "document"}  # a record of each role, in messages


@dataclass(frozen=True)
class Columns:
    """Where one side of a layout lives: its config and the names of its columns; where a layout
    allows alternatives (MTEB 2.x), the first config and id column the dataset has are used."""

    configs: tuple[str, ...]
    ids: tuple[str, ...]
    text: str | None = None
    title: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class LayoutSpec:
    """The configs and columns of one layout; qrels always carry `QRELS_COLUMNS`, the optional
    first-stage lists (`top_ranked`) `TOP_RANKED_COLUMNS`."""

    queries: Columns
    corpus: Columns
    qrels_configs: tuple[str, ...]
    top_ranked_config: str | None = None


LAYOUTS: dict[str, LayoutSpec] = {
    # mteb/arguana, mteb/cqadupstack-english, …: configs corpus (split corpus), queries
    # (split queries), default (qrels per split); ids ``_id``; float scores.
    "beir": LayoutSpec(
        queries=Columns(("queries",), ("_id",), text="text"),
        corpus=Columns(("corpus",), ("_id",), text="text", title="title"),
        qrels_configs=("default",),
    ),
    # mteb/CQADupstackAndroidRetrieval, mteb/InfoSeekIT2ITRetrieval: configs corpus, queries,
    # qrels, each with the eval split; integer scores; an image column where there are images.
    "mteb": LayoutSpec(
        queries=Columns(("queries",), ("id",), text="text", image="image"),
        corpus=Columns(("corpus",), ("id",), text="text", title="title", image="image"),
        qrels_configs=("qrels",),
    ),
    # mteb/mbeir_*, izhx/UMRB-*, mteb/flickr30k*: configs query (test), corpus (split corpus),
    # qrels (test, with a Q0 column); text or image may be null per row.
    "mbeir": LayoutSpec(
        queries=Columns(("query",), ("id",), text="text", image="image"),
        corpus=Columns(("corpus",), ("id",), text="text", image="image"),
        qrels_configs=("qrels",),
    ),
    # mteb/*_beir (ViDoRe): integer ids, queries in ``query``, page screenshots in ``image``.
    "vidore": LayoutSpec(
        queries=Columns(("queries",), ("query-id",), text="query"),
        corpus=Columns(("corpus",), ("corpus-id",), image="image"),
        qrels_configs=("qrels",),
    ),
    # MTEB 2.x's RetrievalDatasetLoader: queries in config query (when present) else queries, qrels
    # in default else qrels, ``_id`` read as ``id``, optional top_ranked (query-id, corpus-ids) of a
    # reranking task; text, title and image columns as MTEB and MIEB write them.
    "mteb2": LayoutSpec(
        queries=Columns(("query", "queries"), ("id", "_id"), text="text", image="image"),
        corpus=Columns(("corpus",), ("id", "_id"), text="text", title="title", image="image"),
        qrels_configs=("default", "qrels"),
        top_ranked_config="top_ranked",
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
    """The folder that holds (or will hold) the mirror of one hub source revision."""
    assert source.revision is not None, "a local source has no mirror"
    return resolve_data_dir(data_dir) / "sources" / source.path / source.revision


def _manifest_path(mirror: Path) -> Path:
    return mirror.with_name(mirror.name + ".json")


def download_command(task: TaskSpec, data_dir: str | Path | None = None) -> str:
    """The exact CLI command that mirrors a task's sources into the data dir."""
    target = f" --data-dir {data_dir}" if data_dir is not None else ""
    return f"mrb download {task.selection_flags()}{target}"


def download(tasks: Iterable[TaskSpec], data_dir: str | Path | None = None) -> list[Path]:
    """Mirror the hub sources of the tasks (composites: every part) into the data dir.

    A revision already mirrored completely is left alone; each finished mirror gets a
    manifest listing its files, so a reader can name any file that later goes missing.
    Returns the mirror folders, one per hub source (local folders need no mirror).
    """
    folders = []
    for task in tasks:
        for unit in task.units():
            if unit.source is None or unit.source.is_local:
                continue  # a bundled pack or a local folder: nothing to fetch
            target = mirror_path(unit.source, data_dir)
            folders.append(target)
            if _missing_files(target) == []:
                continue
            LOG.info("task %s: mirroring %s@%s into %s", unit.name, unit.source.path, unit.source.revision, target)
            try:
                snapshot_download(unit.source.path, repo_type="dataset", revision=unit.source.revision, local_dir=target)
            except (HfHubHTTPError, OSError) as exc:
                elsewhere = f"`{download_command(task, data_dir)}`, then copy {target} here"
                reason = hub_failure(exc, unit.source.path, unit.source.revision, "dataset", elsewhere) or str(exc)
                raise MRBError(
                    f"task {unit.name!r}: cannot fetch {unit.source.path} at revision {unit.source.revision}: {reason}"
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


def _data_files(folder: Path) -> list[Path]:
    """The files of a folder that make up its content (hidden ones, such as caches, left out), in order."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def folder_digest(folder: Path) -> str:
    """A local source's revision: the sha256 over each file's relative path and sha256."""
    digest = hashlib.sha256()
    for path in _data_files(folder):
        with open(path, "rb") as fh:
            digest.update(f"{path.relative_to(folder).as_posix()}\0{hashlib.file_digest(fh, 'sha256').hexdigest()}\n".encode())
    return digest.hexdigest()


def _declares_configs(folder: Path) -> bool:
    """Whether a folder declares its configs in a README.md, as a hub dataset (and a mirror) does."""
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    try:
        return "configs" in (metadata_load(readme) or {})
    except yaml.YAMLError as exc:
        raise MRBError(f"{readme}: the YAML block at its top is malformed ({exc})") from exc


def _plain_configs(folder: Path) -> dict[str, Path]:
    """The configs of a local folder that declares none: ``<config>/`` holding data files or a
    ``save_to_disk`` dataset, or a ``<config>.parquet`` / ``.jsonl`` / ``.json`` file."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and any(p.suffix in DATA_SUFFIXES or p.suffix == ".arrow" for p in entry.rglob("*")):
            name = entry.name
        elif entry.is_file() and entry.suffix in DATA_SUFFIXES:
            name = entry.stem
        else:
            continue
        if name in found:
            raise MRBError(f"source folder {folder}: config {name!r} is given twice, as {found[name].name} and {entry.name}")
        found[name] = entry
    return found


def _saved_splits(entry: Path) -> list[str] | None:
    """The splits of a ``save_to_disk`` folder (a DatasetDict's, or one for a single Dataset); None for other folders."""
    if (entry / "dataset_dict.json").is_file():
        return list(json.loads((entry / "dataset_dict.json").read_text())["splits"])
    if (entry / "state.json").is_file():
        return [ONLY_SPLIT]
    return None


# Arrow types a column may have: ids are strings or integers; text is a string; an image is an HF
# Image (struct of bytes and path), raw bytes, or (in a local folder) the path of an image file.
def _is_id(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def _is_image(kind: pa.DataType) -> bool:
    return (
        (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_null(kind)
    )


def _is_image_or_path(kind: pa.DataType) -> bool:
    return _is_image(kind) or _is_text(kind)


def _is_grade(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _is_id_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _is_id(kind.value_type)


EXPECTED = {
    _is_id: "ids (string or integer)",
    _is_text: "text (string)",
    _is_image: "images (HF Image or bytes)",
    _is_image_or_path: "images (HF Image, bytes or paths of image files)",
    _is_grade: "relevance grades (numbers)",
    _is_id_list: "lists of ids",
}


class SourceReader:
    """One task's queries, corpus and qrels, read from a local folder, the mirror or the hub, normalised.

    Opening checks ids (no nulls, no repeats), column types, and qrels against both sides, and
    warns about every drop through `report`. `queries` and `corpus` then yield Arrow tables with
    `RECORD_SCHEMA`; records that lack what their side needs, or (from the hub) whose image
    does not decode, are dropped there and counted.
    """

    def __init__(self, task: TaskSpec, data_dir: str | Path | None = None):
        if task.source is None:
            what = "a composite: read each of task.units()" if task.parts else "only a pack"
            raise MRBError(f"task {task.name!r} has no source ({what})")
        self.task = task
        self.source = task.source
        self.layout = LAYOUTS[task.source.layout]
        self.report = SourceReport(task.name)
        self._explicit_dir = data_dir
        self._data_dir = resolve_data_dir(data_dir)
        self.local: Path | None = None  # the folder of a local source
        self._plain: dict[str, Path] | None = None  # a local folder's configs, when it declares none
        self._renames: dict[str, dict[str, str]] = {}  # per side: column in the data → id, text, title, image
        self._path: str
        self._revision: str | None
        self._cache_dir: str | None
        if self.source.is_local:
            self._path, self._revision, self._cache_dir = self._open_folder()
        else:
            self._path, self._revision, self._cache_dir = self._locate()

    def _open_folder(self) -> tuple[str, None, str]:
        folder = self.task.source_folder()
        declared = f" (source path {self.source.path!r} in {self.task.source_file})" if self.task.source_file else ""
        if not folder.is_dir():
            raise MRBError(f"task {self.task.name!r}: the source folder {folder} does not exist{declared}")
        self.local = folder.resolve()
        if not _declares_configs(self.local):
            self._plain = _plain_configs(self.local)
        # one Arrow cache per content: a changed file gets a new digest, so a stale cache is never read
        return str(self.local), None, str(self._data_dir / "arrow" / "local" / self.revision[:16])

    @cached_property
    def revision(self) -> str:
        """The hub revision, or a local folder's content digest (`folder_digest`)."""
        return self.source.revision or folder_digest(self.local)  # type: ignore[arg-type]

    def provenance(self) -> dict[str, Any]:
        """What a pack's manifest records as its source: layout, hub path or folder, revision, split."""
        return {
            **self.source.model_dump(),
            "path": str(self.local or self.source.path),
            "revision": self.revision,
            **({"local": True} if self.local else {}),
        }

    @property
    def storage_key(self) -> str:
        """A folder name for this source's embedding shards: the hub repo, or ``local/<digest>``."""
        return f"local/{self.revision[:16]}" if self.local else self.source.path

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
        except (ConnectionError, datasets.exceptions.DatasetsError, FileNotFoundError, pa.ArrowInvalid) as exc:
            hint = "" if self.local else f"; to mirror the data run `{download_command(self.task, self._explicit_dir)}`"
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""  # datasets wraps what went wrong
            raise MRBError(f"task {self.task.name!r}: cannot read {what} of {self._path}: {exc}{cause}{hint}") from exc

    @cached_property
    def _configs(self) -> list[str]:
        if self._plain is not None:
            return list(self._plain)
        with self._reading("the list of configs"):
            return datasets.get_dataset_config_names(self._path, revision=self._revision)

    def _config(self, candidates: tuple[str, ...], role: str) -> str:
        """The first of a layout's configs for `role` that the dataset has; an `MRBError` when it has none."""
        for config in candidates:
            if config in self._configs:
                return config
        where = " (a folder or a .parquet or .jsonl file of that name)" if self._plain is not None else ""
        raise MRBError(
            f"task {self.task.name!r}: {self._path} has no config {' or '.join(map(repr, candidates))}{where} for the "
            f"{role} (layout {self.source.layout!r} expects it; the dataset has {', '.join(self._configs) or 'none'})"
        )

    def _splits(self, config: str) -> list[str]:
        if self._plain is not None:
            entry = self._plain[config]
            if entry.is_file():
                return [ONLY_SPLIT]
            saved = _saved_splits(entry)
            if saved is not None:
                return saved
            with self._reading(f"the splits of {entry.name}/"):
                return datasets.get_dataset_split_names(str(entry), cache_dir=self._cache_dir)
        with self._reading(f"config {config!r}"):
            return datasets.get_dataset_split_names(self._path, config, revision=self._revision, cache_dir=self._cache_dir)

    def _split(self, config: str) -> str:
        """The eval split when the config has it, else its only split."""
        splits = self._splits(config)
        if self.source.split in splits:
            return self.source.split
        if len(splits) == 1:
            return splits[0]
        raise MRBError(
            f"task {self.task.name!r}: config {config!r} of {self._path} has no split "
            f"{self.source.split!r} (it has {', '.join(splits)})"
        )

    def _load(self, config: str) -> datasets.Dataset:
        """One config's split (`_split`)."""
        split = self._split(config)
        with self._reading(f"config {config!r}"):
            if self._plain is None:
                return _load_dataset(self._path, config, split=split, revision=self._revision, cache_dir=self._cache_dir)
            entry = self._plain[config]
            if entry.is_file():
                return _load_dataset(
                    DATA_SUFFIXES[entry.suffix], data_files=str(entry), split=ONLY_SPLIT, cache_dir=self._cache_dir
                )
            if _saved_splits(entry) is not None:
                saved = datasets.load_from_disk(str(entry))
                return saved[split] if isinstance(saved, datasets.DatasetDict) else saved
            return _load_dataset(str(entry), split=split, cache_dir=self._cache_dir)

    def _where(self, config: str) -> str:
        """A config as an error names it: with its files when the source is a local folder."""
        if self.local is None:
            return f"config {config!r}"
        if self._plain is not None:
            entry = self._plain[config]
            if entry.is_file():
                files = [entry]
            elif _saved_splits(entry) is not None:
                files = [p for p in _data_files(entry) if p.suffix == ".arrow"]
            else:
                files = [p for p in _data_files(entry) if p.suffix in DATA_SUFFIXES]
        else:
            builder = datasets.load_dataset_builder(self._path, config, cache_dir=self._cache_dir)
            files = [Path(f) for f in builder.config.data_files.get(self._split(config), [])]
        return f"config {config!r}: {', '.join(p.relative_to(self.local).as_posix() for p in files)}"

    def _check_types(self, dataset: datasets.Dataset, config: str, role: str, checks: dict[str, Any]) -> None:
        """An `MRBError` naming the column, its type and the file when a column holds the wrong kind of value."""
        schema = dataset.data.schema
        for column, check in checks.items():
            kind = schema.field(column).type
            if not check(kind):
                raise MRBError(
                    f"task {self.task.name!r}: column {column!r} of the {role} of {self._path} ({self._where(config)}) "
                    f"holds {kind}, not {EXPECTED[check]}"
                )

    def _side_dataset(self, role: str, columns: Columns, side: Side) -> datasets.Dataset:
        """A side's config with just the columns the task's side needs, renamed id, text, title, image."""
        config = self._config(columns.configs, role)
        dataset = self._load(config)
        ids = [c for c in columns.ids if c in dataset.column_names]
        wanted: dict[str, str | None] = {"id": ids[0] if ids else columns.ids[0]}
        if "t" in side:
            wanted["text"] = columns.text
            if columns.title in dataset.column_names:
                wanted["title"] = columns.title
        if "i" in side:
            wanted["image"] = columns.image
        absent = [column or purpose for purpose, column in wanted.items() if column not in dataset.column_names]
        if absent:
            raise MRBError(
                f"task {self.task.name!r}: the {role} of {self._path} ({self._where(config)}) lack column(s) "
                f"{', '.join(absent)} needed for a {self.task.type.label} task "
                f"(columns: {', '.join(dataset.column_names)})"
            )
        present = {purpose: column for purpose, column in wanted.items() if column is not None}  # all, after the check
        checks = {"id": _is_id, "text": _is_text, "title": _is_text, "image": _is_image_or_path if self.local else _is_image}
        self._check_types(dataset, config, role, {column: checks[purpose] for purpose, column in present.items()})
        self._renames[role] = {column: purpose for purpose, column in present.items()}
        dataset = dataset.select_columns(list(present.values()))
        return dataset.rename_columns({column: purpose for purpose, column in present.items() if column != purpose})

    def _ids(self, dataset: datasets.Dataset, role: str) -> pa.Array:
        """A side's ids as strings; an `MRBError` on a null or repeated id."""
        ids = pc.cast(dataset.with_format("arrow")["id"], pa.string()).combine_chunks()
        if ids.null_count:
            raise MRBError(f"task {self.task.name!r}: the {role} of {self._path} have a row with a null id")
        counts = pc.value_counts(ids)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        if len(repeated):
            raise MRBError(f"task {self.task.name!r}: the {role} of {self._path} repeat id {repeated[0].as_py()!r}")
        # ids a pack cannot hold (`check_id`), found before any pass over the records (a build embeds first)
        suspect = pc.or_(pc.equal(pc.utf8_length(ids), 0), pc.match_substring_regex(ids, r"[\s\p{Z}\p{C}]"))
        for value in pc.filter(ids, suspect).to_pylist():
            check_id(value, f"task {self.task.name!r}: the {role} of {self._path}")
        return ids

    @cached_property
    def _queries(self) -> datasets.Dataset:
        return self._side_dataset("queries", self.layout.queries, self.task.type.query_side)

    @cached_property
    def _corpus(self) -> datasets.Dataset:
        return self._side_dataset("corpus", self.layout.corpus, self.task.type.document_side)

    def _table(self, config: str, role: str, columns: dict[str, Any]) -> pa.Table:
        """A whole small config (qrels, first-stage lists) as Arrow, its columns checked by name and type."""
        dataset = self._load(config)
        absent = [c for c in columns if c not in dataset.column_names]
        if absent:
            raise MRBError(
                f"task {self.task.name!r}: the {role} of {self._path} ({self._where(config)}) lack column(s) "
                f"{', '.join(absent)} (columns: {', '.join(dataset.column_names)})"
            )
        self._check_types(dataset, config, role, columns)
        return dataset.with_format("arrow")[:]

    @cached_property
    def qrels(self) -> pd.DataFrame:
        """Graded qrels (query_id, doc_id, relevance) of the queries that exist, checked against the corpus.

        Reading them opens all three configs and checks ids on both sides, so every
        structural error surfaces before a long pass over the corpus.
        """
        config = self._config(self.layout.qrels_configs, "qrels")
        table = self._table(config, "qrels", {"query-id": _is_id, "corpus-id": _is_id, "score": _is_grade})
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

        known = frame["query_id"].isin(self.query_ids.to_pandas())
        self.report.add(QRELS_UNKNOWN_QUERY, frame.loc[~known, "query_id"])
        frame = frame[known]
        in_corpus = pc.is_in(pa.array(frame["doc_id"], pa.string()), value_set=self.doc_ids).to_numpy(zero_copy_only=False)
        self.report.add(QRELS_UNKNOWN_DOCUMENT, frame.loc[~in_corpus, "doc_id"])
        self._check_size("documents", len(self.doc_ids))

        judged = pc.is_in(self.query_ids, value_set=pa.array(frame["query_id"].unique(), pa.string()))
        self.report.add(QUERIES_WITHOUT_QRELS, pc.filter(self.query_ids, pc.invert(judged)).to_pylist())
        self._check_size("queries", pc.sum(judged).as_py() or 0)
        if frame.empty:
            raise MRBError(f"task {self.task.name!r}: no qrels row of {self._path} names a known query")
        return frame.reset_index(drop=True)[["query_id", "doc_id", "relevance"]]

    @cached_property
    def query_ids(self) -> pa.Array:
        """Every query id of the source (strings), judged or not."""
        return self._ids(self._queries, "queries")

    @cached_property
    def doc_ids(self) -> pa.Array:
        """Every corpus id of the source (strings)."""
        return self._ids(self._corpus, "corpus")

    def top_ranked(self) -> pd.DataFrame:
        """The source's own first-stage lists (MTEB's ``top_ranked``): query_id, doc_id, rank (1-based, list
        order) and ``row``, the list's row in the config (for error messages). An `MRBError` when the layout
        or the dataset has none."""
        config = self.layout.top_ranked_config
        if config is None or config not in self._configs:
            has = f"layout {self.source.layout!r} has none" if config is None else f"{self._path} has no config {config!r}"
            raise MRBError(
                f"task {self.task.name!r}: no first-stage lists come with the source ({has}); "
                f"import a run with `mrb candidates import {self.task.selection_flags()} --run FILE`"
            )
        table = self._table(config, "first-stage lists", {"query-id": _is_id, "corpus-ids": _is_id_list})
        lists = pc.cast(table["corpus-ids"], pa.list_(pa.string()))
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
        frame = pd.DataFrame(
            {
                "query_id": pc.cast(table["query-id"], pa.string()).to_numpy(zero_copy_only=False).repeat(lengths),
                "doc_id": pc.list_flatten(lists).to_numpy(zero_copy_only=False),
                "row": np.repeat(np.arange(1, len(table) + 1), lengths),
            }
        )
        frame["rank"] = frame.groupby("row").cumcount() + 1
        return frame

    def _check_size(self, what: str, count: int) -> None:
        declared = getattr(self.task.sizes, what, None)
        if declared is not None and declared != count:
            LOG.warning("task %s: read %d %s, the catalogue declares %d", self.task.name, count, what, declared)

    def queries(self, batch_size: int = 1024, ids: pa.Array | None = None) -> Iterator[pa.Table]:
        """The queries that have qrels (or those of `ids` among them), normalised, in batches."""
        wanted = pa.array(self.qrels["query_id"].unique(), pa.string())
        if ids is not None:
            wanted = pc.filter(wanted, pc.is_in(wanted, value_set=ids))
        for batch in _record_batches(self._queries, self._renames["queries"], batch_size):
            batch = batch.filter(pc.is_in(pc.cast(batch["id"], pa.string()), value_set=wanted))
            yield self._normalise(batch, self.task.type.query_side, "queries")

    def check(self) -> SourceReport:
        """Open the three configs and run every check that needs no pass over the records."""
        self.qrels  # noqa: B018 (a cached property that does the checking)
        return self.report

    def corpus(self, batch_size: int = 4096, ids: pa.Array | None = None) -> Iterator[pa.Table]:
        """Every corpus document (or those of `ids`, picked before their images are checked), normalised,
        in batches (after `check`)."""
        self.check()
        for batch in _record_batches(self._corpus, self._renames["corpus"], batch_size):
            if ids is not None:
                batch = batch.filter(pc.is_in(pc.cast(batch["id"], pa.string()), value_set=ids))
            yield self._normalise(batch, self.task.type.document_side, "documents")

    def _images(self, column: pa.ChunkedArray, ids: list[str], role: str) -> list[bytes | None]:
        """A batch's encoded images: embedded bytes, or (local folders) the bytes of the image files named."""
        kind = column.type
        if pa.types.is_struct(kind):
            data = pc.struct_field(column, "bytes").to_pylist()
            paths = pc.struct_field(column, "path").to_pylist() if kind.get_field_index("path") >= 0 else [None] * len(data)
        elif _is_text(kind):
            data, paths = [None] * len(column), column.to_pylist()
        else:
            data, paths = column.to_pylist(), [None] * len(column)
        if self.local is None:
            return data  # a hub dataset embeds its images
        return [
            blob if blob is not None or path is None else self._image_file(path, rid, role)
            for blob, path, rid in zip(data, paths, ids)
        ]

    def _image_file(self, name: str, rid: str, role: str) -> bytes:
        """The bytes of an image file of a local source; it must lie inside the source folder."""
        assert self.local is not None
        path = (self.local / name).resolve()
        if not path.is_relative_to(self.local):
            raise MRBError(
                f"task {self.task.name!r}: {ONE[role]} {rid!r} names image {name!r}, outside the source folder {self.local}"
            )
        if not path.is_file():
            raise MRBError(f"task {self.task.name!r}: {ONE[role]} {rid!r} names image {name!r}, which {self.local} lacks")
        return path.read_bytes()

    def _normalise(self, batch: pa.Table, side: Side, role: str) -> pa.Table:
        """Map one batch to `RECORD_SCHEMA` for the task's side; drop (and count) unusable records."""
        ids = pc.cast(batch["id"], pa.string())
        text = pa.nulls(batch.num_rows, pa.string())
        if "t" in side:
            text = _blank_to_null(pc.cast(batch["text"], pa.string()))
            if "title" in batch.column_names:
                title = _blank_to_null(pc.cast(batch["title"], pa.string()))
                # "title text", else whichever exists (join's null_handling="skip" loses all-null rows)
                text = pc.coalesce(pc.binary_join_element_wise(title, text, " "), text, title)
        image = pa.nulls(batch.num_rows, pa.binary())
        decodes = pa.array([True] * batch.num_rows, pa.bool_())
        if "i" in side:
            blobs = self._images(batch["image"], ids.to_pylist(), role)
            image = pa.array(blobs, pa.binary())
            decodes = pa.array([data is None or _decodes(data) for data in blobs], pa.bool_())
            if self.local is not None and not pc.all(decodes).as_py():
                self._undecodable(batch, ids, decodes, role)
        has_text, has_image = pc.is_valid(text), pc.is_valid(image)
        usable = {"t": has_text, "i": has_image, "it": pc.or_(has_text, has_image)}[side]
        needs = {"t": "text", "i": "an image", "it": "text or image"}[side]
        self.report.add(f"{role} without {needs} (dropped)", pc.filter(ids, pc.invert(usable)).to_pylist())
        self.report.add(f"{role} whose image does not decode (dropped)", pc.filter(ids, pc.invert(decodes)).to_pylist())
        table = pa.table([ids, text, image], schema=RECORD_SCHEMA)
        return table.filter(pc.and_(usable, decodes))

    def _undecodable(self, batch: pa.Table, ids: pa.ChunkedArray, decodes: pa.Array, role: str) -> None:
        """The `MRBError` for the first image of a local source that does not decode, naming the record and the file."""
        first = pc.index(decodes, False).as_py()
        column = batch["image"]
        name = None
        if pa.types.is_struct(column.type) and column.type.get_field_index("path") >= 0:
            name = pc.struct_field(column, "path")[first].as_py()
        elif _is_text(column.type):
            name = column[first].as_py()
        config = self.layout.queries.configs if role == "queries" else self.layout.corpus.configs
        where = f"image file {name!r}" if name else f"the image in {self._where(self._config(config, role))}"
        raise MRBError(f"task {self.task.name!r}: {ONE[role]} {ids[first].as_py()!r} of {self._path}: {where} does not decode")


def _load_dataset(path: str, config: str | None = None, *, split: str, **options: Any) -> datasets.Dataset:
    """`datasets.load_dataset`, telling its Parquet reader not to pre-buffer: by default it reads every row
    group of a file before the first batch, so turning a Parquet corpus into Arrow held all of its images."""
    if datasets.load_dataset_builder(path, config, **options).name == "parquet":
        options["fragment_scan_options"] = pds.ParquetFragmentScanOptions(pre_buffer=False)
    return datasets.load_dataset(path, config, split=split, **options)


def _record_batches(dataset: datasets.Dataset, renames: dict[str, str], batch_size: int) -> Iterator[pa.Table]:
    """A dataset's rows in tables of `batch_size` (the last may be shorter), with its columns renamed by
    `renames` (name in the files → name here).

    The Arrow files behind the dataset are read with plain reads, so a pass over a corpus moves its
    images through the page cache without mapping them into the process (a mapped page read stays in
    the process's resident set); a dataset without files of its own falls back to `datasets`' iterator.
    """
    files = [entry["filename"] for entry in dataset.cache_files]
    if not files or dataset._indices is not None:
        yield from dataset.with_format("arrow").iter(batch_size=batch_size)
        return
    pending: list[pa.Table] = []
    held = 0
    for name in files:
        with pa.OSFile(name) as handle:
            for batch in pa.ipc.open_stream(handle):
                table = pa.Table.from_batches([batch]).select(list(renames)).rename_columns(list(renames.values()))
                pending.append(table)
                held += table.num_rows
                while held >= batch_size:
                    joined = pa.concat_tables(pending)
                    yield joined.slice(0, batch_size)
                    pending, held = [joined.slice(batch_size)], held - batch_size
    if held:
        yield pa.concat_tables(pending)


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
