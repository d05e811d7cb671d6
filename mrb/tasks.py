"""Task specs: the strict YAML schema, the bundled catalogue, and task selection."""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class TaskSpec(BaseModel):
    """One task as declared in YAML. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    type: TaskType
    instruction: str = Field(min_length=1)
    metric: str = "nDCG@10"
    depth: int = Field(default=100, gt=0)
    pack: str = Field(description="pack folder, relative to the YAML file or absolute")
    description: str = ""
    reference: str = ""
    ignore_identical_ids: bool = False
    source_file: Path | None = Field(default=None, exclude=True)

    @field_validator("metric")
    @classmethod
    def _metric_parses(cls, value: str) -> str:
        import ir_measures

        try:
            ir_measures.parse_measure(value)
        except Exception as exc:  # ir_measures raises several types for a bad measure
            raise ValueError(f"unknown metric {value!r} (ir_measures syntax, e.g. nDCG@10)") from exc
        return value

    @property
    def category(self) -> Category:
        return self.type.category

    def pack_path(self) -> Path:
        path = Path(self.pack)
        if not path.is_absolute() and self.source_file is not None:
            path = self.source_file.parent / path
        return path


class SuiteSpec(BaseModel):
    """A named list of tasks (names or globs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    description: str = ""
    tasks: list[str] = Field(min_length=1)


def bundled_tasks_dir() -> Path:
    """The catalogue shipped with MRB: inside the wheel, or ``tasks/`` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_bundled" / "tasks", here.parent / "tasks"):
        if candidate.is_dir():
            return candidate
    raise MRBError(f"MRB's task catalogue is missing (looked in {here / '_bundled' / 'tasks'} and {here.parent / 'tasks'})")


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MRBError(f"{path}:{where}: malformed YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise MRBError(f"{path}: expected a mapping of keys at the top level")
    return data


def _format_validation(path: Path, exc: ValidationError) -> str:
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
    path = Path(path)
    data = _load_yaml(path)
    try:
        return TaskSpec(**data, source_file=path)
    except ValidationError as exc:
        raise MRBError(_format_validation(path, exc)) from None


def load_suite_file(path: str | Path) -> SuiteSpec:
    path = Path(path)
    data = _load_yaml(path)
    try:
        return SuiteSpec(**data)
    except ValidationError as exc:
        raise MRBError(_format_validation(path, exc)) from None


class Catalogue:
    """All task and suite YAML files under one or more folders (``*.yaml``; suites carry a ``suite`` key)."""

    def __init__(self, folders: list[Path]):
        self.tasks: dict[str, TaskSpec] = {}
        self.suites: dict[str, SuiteSpec] = {}
        for folder in folders:
            for path in sorted(Path(folder).rglob("*.yaml")):
                if "suite" in _load_yaml(path):
                    suite = load_suite_file(path)
                    self._add(self.suites, suite.suite, suite, path)
                else:
                    task = load_task_file(path)
                    self._add(self.tasks, task.name, task, path)
        for suite in self.suites.values():
            self.select(",".join(suite.tasks))  # a suite naming an unknown task fails at load time

    @staticmethod
    def _add(into: dict, name: str, item, path: Path) -> None:
        if name in into:
            raise MRBError(f"{path}: name {name!r} is already defined elsewhere in the catalogue")
        into[name] = item

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

    def _match(self, term: str) -> list[TaskSpec]:
        lowered = term.lower()
        if lowered == "all":
            return list(self.tasks.values())
        if term in self.tasks:
            return [self.tasks[term]]
        if term in self.suites:
            return self.select(",".join(self.suites[term].tasks))
        if lowered in {t.value for t in TaskType}:
            return [t for t in self.tasks.values() if t.type.value == lowered]
        if lowered in {c.value for c in Category} or lowered in {c.value.split("-")[0] for c in Category}:
            return [t for t in self.tasks.values() if t.category.value.startswith(lowered)]
        return [t for name, t in self.tasks.items() if fnmatch.fnmatchcase(name, term)]

    def _unknown_message(self, term: str) -> str:
        import difflib

        names = list(self.tasks) + list(self.suites)
        close = difflib.get_close_matches(term, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See `mrb tasks` for the catalogue."
        return f"no task matches {term!r}.{hint}"


@cache
def bundled_catalogue() -> Catalogue:
    return Catalogue([bundled_tasks_dir()])


def load_tasks(selection: str = "all", *, task_dirs: list[str | Path] | None = None) -> list[TaskSpec]:
    """Select tasks from the bundled catalogue, or from the given folders of YAML files."""
    catalogue = Catalogue([Path(d) for d in task_dirs]) if task_dirs else bundled_catalogue()
    return catalogue.select(selection)
