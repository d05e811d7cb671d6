"""Task specs: the strict YAML schema, the bundled catalogue, and task selection."""

from __future__ import annotations

import fnmatch
import os
import re
import statistics
from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from mrb.errors import MRBError


class Category(StrEnum):
    SINGLE = "single-modal"
    CROSS = "cross-modal"
    FUSED = "fused-modal"


# A side of a pair: text only, image only (a photo or a visual document), or image+text.
Side = Literal["t", "i", "it"]


class TaskType(StrEnum):
    """Query→document modality codes, in the column order of the paper's main table."""

    T2T = "t2t"
    I2I = "i2i"
    T2I = "t2i"
    T2VD = "t2vd"
    I2T = "i2t"
    T2IT = "t2it"
    IT2T = "it2t"
    IT2I = "it2i"
    IT2IT = "it2it"

    @property
    def label(self) -> str:
        """The paper's column header, e.g. ``IT→T``."""
        query, doc = self.value.split("2")
        return f"{query.upper()}→{doc.upper()}"

    @property
    def category(self) -> Category:
        if self in (TaskType.T2T, TaskType.I2I):
            return Category.SINGLE
        if self in (TaskType.T2I, TaskType.T2VD, TaskType.I2T):
            return Category.CROSS
        return Category.FUSED

    @property
    def query_side(self) -> Side:
        return self.value.split("2")[0]  # type: ignore[return-value]

    @property
    def document_side(self) -> Side:
        doc = self.value.split("2")[1]
        return "i" if doc == "vd" else doc  # type: ignore[return-value]


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"

# The layouts MRB reads (see docs/tasks.md, docs/own-data.md and mrb/sources.py): the four of the
# paper's hub sets (older BEIR text sets, the newer MTEB layout, M-BEIR / UMRB, ViDoRe BEIR) and
# MTEB 2.x's own retrieval layout (qrels in `default`, optional `top_ranked`).
Layout = Literal["beir", "mteb", "mbeir", "vidore", "mteb2"]
HUB_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$"
GIVEN = "given"  # the first stage whose lists come with the source (`top_ranked`)

# What a judged query without any relevant document contributes to a task's mean: 0 (pytrec_eval,
# ir_measures, MTEB and BEIR average it in as 0), or nothing (set aside, counted); docs/metrics.md.
NoRelevant = Literal["zero", "drop"]

DATA_DIR_ENV = "MRB_DATA_DIR"
BENCHMARK_SUITE = "mrb"  # the suite that ``all``, type codes and categories select from


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """MRB's data folder (source mirrors, packs): the argument, else ``$MRB_DATA_DIR``, else ``~/.cache/mrb``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "mrb"


class SourceSpec(BaseModel):
    """A task's raw data: a Hugging Face hub dataset pinned to one commit, or, without a
    revision, a local folder (relative to the task YAML, or absolute) whose revision is the
    content digest MRB computes when it reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: Layout
    path: str = Field(min_length=1, description="hub dataset owner/name, or a local folder")
    revision: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{40}$", description="full commit sha of a hub dataset; none for a local folder"
    )
    split: str = Field(default="test", min_length=1, description="evaluation split")

    @model_validator(mode="after")
    def _hub_repo_named(self) -> SourceSpec:
        if self.revision is not None and not re.match(HUB_REPO_PATTERN, self.path):
            raise ValueError(
                f"a source with a revision is a hub dataset named owner/name, not {self.path!r} (a local folder has no revision)"
            )
        return self

    @property
    def is_local(self) -> bool:
        return self.revision is None


class Sizes(BaseModel):
    """Declared size of a task's full data: queries, corpus documents and qrels rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queries: int = Field(gt=0)
    documents: int = Field(gt=0)
    qrels: int = Field(gt=0)


class SampleSpec(BaseModel):
    """A seeded query sample: the `queries` ids with the smallest sha256(f"{seed}:{id}") (`mrb.candidates`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queries: int = Field(gt=0, description="queries drawn per task (a composite's parts share them)")
    seed: int = 0


class PartSpec(BaseModel):
    """One part of a composite task (e.g. a CQADupStack sub-forum): its own source and pack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    source: SourceSpec
    pack: str | None = None


class TaskSpec(BaseModel):
    """One task as declared in YAML. Unknown keys are rejected.

    A task takes its data from a hub ``source`` (its candidate pack is then built into the
    data dir, or read from ``pack`` when given), from a ``pack`` folder alone, or, for a
    composite task, from its ``parts``: each part is scored on its own and the task's
    score is the mean of the part scores (`TaskSpec.aggregate`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    type: TaskType
    instruction: str = Field(min_length=1)
    metric: str = "nDCG@10"
    depth: int = Field(default=100, gt=0)
    first_stage: str | None = Field(default=None, description="retriever whose top-`depth` lists form the pack")
    source: SourceSpec | None = None
    parts: tuple[PartSpec, ...] | None = Field(default=None, min_length=2)
    pack: str | None = Field(default=None, description="pack folder, relative to the YAML file or absolute")
    sizes: Sizes | None = None
    description: str = ""
    reference: str = ""
    ignore_identical_ids: bool = False
    no_relevant: NoRelevant = Field(
        default="zero", description="a judged query without any relevant document: zero (scored 0) or drop (set aside)"
    )
    sample: SampleSpec | None = Field(default=None, description="build the pack on a seeded query sample")
    source_file: Path | None = Field(default=None, exclude=True)
    _composite: str | None = PrivateAttr(default=None)
    _sampled_from: TaskSpec | None = PrivateAttr(default=None)
    _task_dir: Path | None = PrivateAttr(default=None)  # the --task-dir it was read from; None: bundled

    @field_validator("metric")
    @classmethod
    def _metric_parses(cls, value: str) -> str:
        import ir_measures

        try:
            ir_measures.parse_measure(value)
        except Exception as exc:  # ir_measures raises several types for a bad measure
            raise ValueError(f"unknown metric {value!r} (ir_measures syntax, e.g. nDCG@10)") from exc
        return value

    @model_validator(mode="after")
    def _one_data_origin(self) -> TaskSpec:
        if self.parts is not None:
            if self.source is not None or self.pack is not None:
                raise ValueError("a composite task (parts) takes its source and pack from each part, not from the task")
            names = [part.name for part in self.parts]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"part name(s) {', '.join(repeated)} repeated")
        elif self.source is None and self.pack is None:
            raise ValueError("a task needs a hub source, a pack folder or parts")
        return self

    @property
    def category(self) -> Category:
        return self.type.category

    @property
    def composite(self) -> str | None:
        """For a part of a composite task, the composite's name; else None."""
        return self._composite

    @property
    def sampled_from(self) -> TaskSpec | None:
        """For a sampled variant selected through a suite (``ArguAna-lite``), the full task; else None."""
        return self._sampled_from

    @property
    def task_dir(self) -> Path | None:
        """The user's task folder (``--task-dir``) this task was read from; None for the bundled catalogue."""
        return self._task_dir

    def selection_flags(self) -> str:
        """The flags that select this task on the command line: ``--tasks NAME`` and, for a task of a
        user's folder, ``--task-dir DIR``."""
        folder = f" --task-dir {self._task_dir}" if self._task_dir is not None else ""
        return f"--tasks {self.composite or self.name}{folder}"

    def source_folder(self) -> Path:
        """A local source's folder: ``source.path`` relative to the task YAML (or the current folder), or absolute."""
        if self.source is None or not self.source.is_local:
            raise MRBError(f"task {self.name!r} has no local source folder")
        path = Path(self.source.path).expanduser()
        if not path.is_absolute() and self.source_file is not None:
            path = self.source_file.parent / path
        return path

    def units(self) -> list[TaskSpec]:
        """The tasks that hold data and get scored: a composite's parts, or the task itself."""
        if self.parts is None:
            return [self]
        units = []
        sample = None
        if self.sample is not None:  # the parts share the sample: ceil(queries / parts) each
            sample = self.sample.model_copy(update={"queries": -(-self.sample.queries // len(self.parts))})
        full_units = self._sampled_from.units() if self._sampled_from is not None else [None] * len(self.parts)
        for part, full in zip(self.parts, full_units):
            unit = self.model_copy(
                update={
                    "name": f"{self.name}-{part.name}",
                    "parts": None,
                    "source": part.source,
                    "pack": part.pack,
                    "sizes": None,
                    "description": f"the {part.name} part of {self.name}",
                    "sample": sample,
                }
            )
            unit._composite = self.name
            unit._sampled_from = full
            units.append(unit)
        return units

    def aggregate(self, unit_scores: Mapping[str, float]) -> float:
        """The task's score from the scores of its `units` (by name): the plain mean of its parts."""
        names = [unit.name for unit in self.units()]
        missing = [n for n in names if n not in unit_scores]
        extra = sorted(set(unit_scores) - set(names))
        if missing or extra:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unexpected {', '.join(extra)}"] if extra else []
            raise MRBError(f"task {self.name!r}: cannot aggregate part scores ({'; '.join(problems)})")
        return statistics.fmean(unit_scores[n] for n in names)

    def pack_location(self, data_dir: str | Path | None = None) -> Path:
        """Where this task's pack lives: ``pack`` (relative to the YAML), else ``<data dir>/packs/<name>``."""
        if self.parts is not None:
            raise MRBError(
                f"task {self.name!r} is a composite of {len(self.parts)} parts, each with its own pack: use TaskSpec.units()"
            )
        if self.pack is None:
            return resolve_data_dir(data_dir) / "packs" / self.name
        path = Path(self.pack)
        if not path.is_absolute() and self.source_file is not None:
            path = self.source_file.parent / path
        return path

    def pack_path(self, data_dir: str | Path | None = None) -> Path:
        """The existing pack folder of this task; an `MRBError` saying how to build it when there is none."""
        path = self.pack_location(data_dir)
        if path.is_dir():
            return path
        if self.pack is not None:
            raise MRBError(f"task {self.name!r}: pack folder {path} does not exist (declared as pack: {self.pack!r})")
        raise MRBError(
            f"task {self.name!r} has no candidate pack yet (looked in {path}): build it with "
            f"`{self.build_command(data_dir)}`, or pass --build-missing to `mrb run`"
        )

    def build_command(self, data_dir: str | Path | None = None) -> str:
        """The exact CLI command that builds this task's pack(s) with its own first stage."""
        retriever = f" --retriever {self.first_stage}" if self.first_stage else ""
        target = f" --data-dir {data_dir}" if data_dir is not None else ""
        return f"mrb candidates build {self.selection_flags()}{retriever}{target}"


class SuiteSpec(BaseModel):
    """A named list of tasks (names, globs or other suites).

    A suite with a `sample` selects sampled variants of its tasks, named ``<task>-<suffix>``,
    whose packs hold only the sampled queries (e.g. ``mrb-lite``: ``ArguAna-lite``, …).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    description: str = ""
    tasks: list[str] = Field(min_length=1)
    sample: SampleSpec | None = None
    suffix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

    @model_validator(mode="after")
    def _sample_has_suffix(self) -> SuiteSpec:
        if (self.sample is None) != (self.suffix is None):
            raise ValueError("a sampled suite needs both sample and suffix (its tasks are named <task>-<suffix>)")
        return self


def bundled_tasks_dir() -> Path:
    """The catalogue shipped with MRB: inside the wheel, or ``tasks/`` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_bundled" / "tasks", here.parent / "tasks"):
        if candidate.is_dir():
            return candidate
    raise MRBError(f"MRB's task catalogue is missing (looked in {here / '_bundled' / 'tasks'} and {here.parent / 'tasks'})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a mapping that repeats a key (yaml itself keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is repeated", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> dict:
    """A YAML file of MRB's (a task, a suite, reported numbers) as a mapping: UTF-8, safe tags only, no repeated key."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MRBError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise MRBError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MRBError(f"{path}:{where}: malformed YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise MRBError(f"{path}: expected a mapping of keys at the top level")
    return data


def validation_message(path: Path, exc: ValidationError) -> str:
    """A pydantic error of a YAML file as one line: the file, then each problem by key."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {loc!r}")
        elif err["type"] == "enum" and err["loc"] == ("type",):
            codes = ", ".join(t.value for t in TaskType)
            problems.append(f"unknown type code {err['input']!r} (expected one of {codes})")
        else:
            problems.append(f"{loc}: {err['msg']}")
    return f"{path}: " + "; ".join(problems)


def load_task_file(path: str | Path) -> TaskSpec:
    """Read and validate one task YAML file."""
    return _task(Path(path), load_yaml(Path(path)))


def _task(path: Path, data: dict) -> TaskSpec:
    try:
        return TaskSpec(**data, source_file=path)
    except ValidationError as exc:
        raise MRBError(validation_message(path, exc)) from None


def _suite(path: Path, data: dict) -> SuiteSpec:
    try:
        return SuiteSpec(**data)
    except ValidationError as exc:
        raise MRBError(validation_message(path, exc)) from None


class Catalogue:
    """All task and suite YAML files under one or more folders (``*.yaml``; suites carry a ``suite`` key).

    `own` folders (a user's ``--task-dir``) come on top of `folders`: their tasks remember the folder,
    so that every command MRB suggests for them carries ``--task-dir``, and they are what ``all``, type
    codes and categories range over. A name defined twice is an error naming both files; a file
    reached twice (a folder given again) is read once.
    """

    def __init__(self, folders: list[Path], own: list[Path] | None = None):
        self.tasks: dict[str, TaskSpec] = {}
        self.suites: dict[str, SuiteSpec] = {}
        self._origins: dict[str, Path] = {}  # task or suite name → the file that defines it
        self._own: list[str] = []  # names of the tasks read from `own` folders
        self._own_folders = [Path(f) for f in own or []]
        read: set[Path] = set()
        for folder, is_own in [(Path(f), False) for f in folders] + [(f, True) for f in self._own_folders]:
            if is_own and not folder.is_dir():
                raise MRBError(f"task folder {folder} does not exist (given as --task-dir)")
            for path in sorted(folder.rglob("*.yaml")):
                if path.resolve() in read:
                    continue
                read.add(path.resolve())
                data = load_yaml(path)  # each file is parsed once
                if "suite" in data:
                    suite = _suite(path, data)
                    self._add(self.suites, suite.suite, suite, path)
                else:
                    task = _task(path, data)
                    if is_own:
                        task._task_dir = folder
                        self._own.append(task.name)
                    self._add(self.tasks, task.name, task, path)
        self.variants: dict[str, TaskSpec] = {}  # sampled tasks of the suites with a sample
        for suite in self.suites.values():
            members = self.select(",".join(suite.tasks))  # a suite naming an unknown task fails at load time
            if suite.sample is not None:
                for task in members:
                    self._add(self.variants, f"{task.name}-{suite.suffix}", self._variant(task, suite), Path(suite.suite))

    @staticmethod
    def _variant(task: TaskSpec, suite: SuiteSpec) -> TaskSpec:
        if task.source is None and task.parts is None:
            raise MRBError(f"suite {suite.suite!r} samples task {task.name!r}, which has no hub source to sample from")
        sample = suite.sample
        assert sample is not None
        variant = task.model_copy(
            update={
                "name": f"{task.name}-{suite.suffix}",
                "sample": sample,
                "pack": None,
                "description": f"{task.name} on a seeded sample of {sample.queries} queries (seed {sample.seed})",
            }
        )
        variant._sampled_from = task
        return variant

    def _add(self, into: dict, name: str, item, path: Path) -> None:
        if name in into:
            raise MRBError(f"{path}: name {name!r} is already defined in {self._origins.get(name, 'the catalogue')}")
        into[name] = item
        self._origins.setdefault(name, path)

    def select(self, selection: str) -> list[TaskSpec]:
        """Resolve a selection: ``all``, comma lists of names, globs, type codes, categories or suites."""
        chosen: dict[str, TaskSpec] = {}
        terms = [t.strip() for t in selection.split(",") if t.strip()]
        if not terms:
            raise MRBError("empty task selection: name tasks, globs, type codes, categories, suites or 'all'")
        for term in terms:
            matched = self._match(term)
            if not matched:
                raise MRBError(self._unknown_message(term))
            for task in matched:
                chosen.setdefault(task.name, task)
        return list(chosen.values())

    def scope(self) -> list[TaskSpec]:
        """What ``all``, type codes and categories range over: the tasks of the `own` folders when
        there are any, else the suite named `BENCHMARK_SUITE` (the paper's 40) when the catalogue
        has it, else every task."""
        if self._own:
            return [self.tasks[name] for name in self._own]
        if BENCHMARK_SUITE in self.suites:
            return self.select(",".join(self.suites[BENCHMARK_SUITE].tasks))
        return list(self.tasks.values())

    def _match(self, term: str) -> list[TaskSpec]:
        lowered = term.lower()
        if term in self.tasks:
            return [self.tasks[term]]
        if term in self.variants:
            return [self.variants[term]]
        if term in self.suites:
            suite = self.suites[term]
            members = self.select(",".join(suite.tasks))
            return [self.variants[f"{t.name}-{suite.suffix}"] for t in members] if suite.sample else members
        if lowered == "all":
            return self.scope()
        if lowered in {t.value for t in TaskType}:
            return [t for t in self.scope() if t.type.value == lowered]
        if lowered in {c.value for c in Category} or lowered in {c.value.split("-")[0] for c in Category}:
            return [t for t in self.scope() if t.category.value.startswith(lowered)]
        return [t for name, t in self.tasks.items() if fnmatch.fnmatchcase(name, term)]

    def _unknown_message(self, term: str) -> str:
        import difflib

        names = list(self.tasks) + list(self.suites)
        close = difflib.get_close_matches(term, names, n=3, cutoff=0.5)
        folders = "".join(f" --task-dir {folder}" for folder in self._own_folders)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" See `mrb tasks{folders}` for the catalogue."
        return f"no task matches {term!r}.{hint}"


@cache
def bundled_catalogue() -> Catalogue:
    return Catalogue([bundled_tasks_dir()])


def load_tasks(selection: str = "all", *, task_dirs: list[str | Path] | None = None) -> list[TaskSpec]:
    """Select tasks from the bundled catalogue and, on top of it, the given folders of YAML files
    (whose tasks are then what ``all``, type codes and categories range over)."""
    if not task_dirs:
        return bundled_catalogue().select(selection)
    return Catalogue([bundled_tasks_dir()], own=[Path(d) for d in task_dirs]).select(selection)
