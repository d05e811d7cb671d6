"""`Session`: the lifecycle of one run, the same for `mrb run` and `mrb.evaluate`.

In order: the distributed world and this process's device (before any model is built, so each
torchrun rank loads onto its own GPU), the task selection and its packs (built first with
`build_missing`), the model and its identity, the results-folder lock and the check that the
model may write there, the tasks (each scored through the runner, with the score cache, and
written as it finishes), the closing summary, and the teardown of the process group.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from mrb.distributed import World, close_world, init_world
from mrb.errors import MRBError
from mrb.identity import ModelIdentity, identify
from mrb.io import remove_stale_temporaries
from mrb.lock import ResultsLock
from mrb.plan import BYTES_PER_PAIR, Plan, check_packs, task_plan
from mrb.progress import RunProgress
from mrb.rerankers import Reranker, as_reranker, get_reranker
from mrb.rerankers.base import ListwiseReranker, check_declaration
from mrb.rerankers.fallback import Fallback, adaptation
from mrb.rerankers.presets import fallback_options
from mrb.results import LEADERBOARD_COLUMNS, LEADERBOARD_FILE, TaskScores, check_model_folder, read_leaderboard, remove_model
from mrb.runner import RunOptions, RunStats, run_task
from mrb.tasks import TaskSpec, load_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """One run of `model` over the `tasks` selection (see the module docstring for the order of things).

    `model` is a preset name, a checkpoint with `adapter`, a `Reranker`, an object with ``score`` or a
    plain callable; `name` and `version` override its identity's; `model_options` (device, dtype, …)
    go to the adapter. `output_dir` receives the results (None: returned only); `options` are the
    runner's (`RunOptions`; its `cache_dir` defaults to ``<output_dir>/cache``).
    """

    model: Any
    tasks: str = "mini"
    options: RunOptions = field(default_factory=RunOptions)
    output_dir: Path | None = None
    adapter: str | None = None
    name: str | None = None
    version: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    task_dirs: list[str | Path] | None = None
    data_dir: str | Path | None = None
    build_missing: bool = False
    quiet: bool = False
    dry_run: bool = False
    fallback: str | None = None  # feed sides the model lacks (`mrb.rerankers.fallback`): image-only or text-only

    def run(self) -> pd.DataFrame:
        """Run every task and return the leaderboard rows (on rank 0; other ranks get an empty frame).

        Before any weights load: the packs are checked (or built), the model object is made (adapters read
        their weights on their first pair), the results folder locked and checked, and the plan printed
        (to stdout and nothing more with `dry_run`)."""
        with self._world() as world:
            specs = load_tasks(self.tasks, task_dirs=self.task_dirs)
            if self.build_missing:
                self._build_packs(specs, world)
            check_packs(specs, self.tasks, self.data_dir, self.task_dirs)
            reranker = self._reranker()
            check_declaration(reranker)
            devices = world.gather(f"rank {world.rank}: {device_name(reranker)}") if world.size > 1 else [device_name(reranker)]
            identity = identify(reranker)
            if identity.unproven:
                log.warning("%s; until then its scores are not cached", identity.advice())
            return self._run_tasks(specs, reranker, identity, world, devices or [])

    def plan(self, specs: list[TaskSpec], reranker: Reranker, identity: ModelIdentity, cache_dir: Path | None) -> Plan:
        """What the run will do: per task the pairs (a listwise model's windows), those in the score cache, and the
        time at a measured rate."""
        listwise = reranker if isinstance(reranker, ListwiseReranker) else None
        unsupported = [spec.name for spec in specs if not reranker.supports(spec.type)]
        tasks = [task_plan(s, self.data_dir, identity, cache_dir, listwise) for s in specs if reranker.supports(s.type)]
        if listwise is not None:
            windows = f"no windows/s measured for listwise models on {device_name(reranker)}"
            return Plan(identity.name, tasks, None, windows, unsupported, "windows", BYTES_PER_PAIR * (listwise.window + 1))
        rate, source = measured_rate(self.model, device_name(reranker))
        return Plan(identity.name, tasks, rate, source, unsupported)

    @contextmanager
    def _world(self) -> Iterator[World]:
        """torch.distributed and this rank's device, set up before the model exists; torn down after."""
        world = init_world()
        try:
            yield world
        finally:
            close_world(world)

    def _build_packs(self, specs: list[TaskSpec], world: World) -> None:
        from mrb.candidates import ensure_packs

        if world.is_main:
            ensure_packs(specs, self.data_dir, build_missing=True)
        world.barrier()  # rank 0 writes the packs the others then read

    def _reranker(self) -> Reranker:
        if isinstance(self.model, str):
            options = {**self.model_options, **(fallback_options(self.model) if self.fallback else {})}
            reranker = as_reranker(
                get_reranker(self.model, adapter=self.adapter, **options), name=self.name, version=self.version
            )
        elif self.model_options or self.adapter:
            raise MRBError("options and adapter apply to a preset name or checkpoint folder, not to a reranker object")
        else:
            reranker = as_reranker(self.model, name=self.name, version=self.version)
        if self.fallback and isinstance(reranker, ListwiseReranker):
            raise MRBError(f"--fallback feeds a pointwise reranker sides it lacks; {reranker.name} is listwise")
        return Fallback(reranker, self.fallback) if self.fallback else reranker  # type: ignore[arg-type]

    def _run_tasks(
        self, specs: list[TaskSpec], reranker: Reranker, identity: ModelIdentity, world: World, devices: list[str]
    ) -> pd.DataFrame:
        options = self.options
        if options.cache_dir is None and self.output_dir is not None:
            options = replace(options, cache_dir=Path(self.output_dir) / "cache")
        settings = reranker.settings()
        rows: list[dict[str, Any]] = []
        total = RunStats()
        with ExitStack() as stack:
            self._lock(stack, identity, world)
            if world.is_main and (self.dry_run or not self.quiet):
                plan = self.plan(specs, reranker, identity, options.cache_dir if options.overwrite != "always" else None)
                print(plan.render(), file=sys.stdout if self.dry_run else sys.stderr, flush=True)
            if self.dry_run:
                return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
            finished = self._finished_rows(identity.name, world) if options.overwrite == "never" else {}
            progress = None if self.quiet or not world.is_main else stack.enter_context(RunProgress(len(specs)))
            for spec in specs:
                if spec.name in finished:
                    log.info("%s on %s: kept from %s (--overwrite never)", identity.name, spec.name, self.output_dir)
                    rows.append(finished[spec.name])
                else:
                    scores = run_task(
                        spec, reranker, identity=identity, options=options, progress=progress, world=world, data_dir=self.data_dir
                    )
                    if scores is not None:  # rank 0
                        assert scores.stats is not None
                        total.add(scores.stats)
                        scores = replace(scores, adapted=adaptation(reranker, spec.type))
                        record = provenance(settings, scores, world, devices)
                        rows.append(self._record(scores.stamped(identity, settings, record)))
                if progress is not None:
                    progress.finish_task()
        silent = [row["task"] for row in rows if row.get("no_signal")]
        if world.is_main and silent:
            log.warning(
                "%s gave every candidate of every query one score on %s: no signal, the values equal the first stage's",
                identity.name,
                ", ".join(silent),
            )
        if world.is_main:
            log.info("%s: %s", identity.name, total.summary())
            if progress is not None:
                progress.console.print(f"[bold]{identity.name}[/bold]: {total.summary()}", soft_wrap=True)
        return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)

    def _record(self, scores: TaskScores) -> dict[str, Any]:
        """The task's leaderboard row, written with its files when there is a results folder."""
        if self.output_dir is not None:
            scores.write(Path(self.output_dir))
        log.info("%s on %s: %s", scores.model, scores.task, scores.value if scores.status == "ok" else scores.status)
        return scores.row()

    def _lock(self, stack: ExitStack, identity: ModelIdentity, world: World) -> None:
        """Rank 0 locks the results folder and checks that `identity` may write there (with ``--overwrite always``
        a different model under its name is removed first); every rank fails with its message when refused."""
        error = None
        if self.output_dir is not None and world.is_main:
            folder = Path(self.output_dir)
            try:
                stack.enter_context(ResultsLock(folder))
                if remove_stale_temporaries(folder):
                    log.info("%s: removed the temporary files of an interrupted run", folder)
                if check_model_folder(folder, identity, replace=self.options.overwrite == "always"):
                    log.warning(
                        "%s: replacing the results of a different model of that name in %s (--overwrite always)",
                        identity.name,
                        folder,
                    )
                    remove_model(folder, identity.name)
            except MRBError as exc:
                error = str(exc)
        error = world.broadcast(error)
        if error:
            raise MRBError(error)

    def _finished_rows(self, model: str, world: World) -> dict[str, dict[str, Any]]:
        """Rows of tasks this model already finished in the results folder (rank 0 reads, all ranks get them)."""
        found: dict[str, dict[str, Any]] = {}
        if self.output_dir is not None and world.is_main and (Path(self.output_dir) / LEADERBOARD_FILE).is_file():
            board = read_leaderboard(self.output_dir)
            found = {row["task"]: row for row in board[board["model"] == model].to_dict("records")}
        shared: dict[str, dict[str, Any]] = world.broadcast(found)
        return shared


# ── provenance ───────────────────────────────────────────────────────────────────────────


@cache
def git_sha() -> str | None:
    """The commit of the MRB checkout this code runs from, when it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def measured_rate(model: Any, device: str) -> tuple[float | None, str]:
    """A preset's measured pairs/s on this kind of device, and where the figure comes from."""
    from mrb.rerankers.presets import PRESETS

    preset = PRESETS.get(model) if isinstance(model, str) else None
    for kind, rate in (preset.rates if preset is not None else {}).items():
        if kind in device:
            return rate, f"measured for {preset.name} on an {kind}: docs/running.md"  # type: ignore[union-attr]
    return None, f"no pairs/s measured for this model on {device}"


def device_name(reranker: Any) -> str:
    """The device a reranker runs on, with the index of the GPU this process uses, and its model name."""
    device = str(getattr(reranker, "device", "cpu"))
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device} ({platform.processor() or platform.machine()})"


def provenance(settings: dict[str, Any], scores: TaskScores, world: World, devices: list[str]) -> dict[str, Any]:
    """Where a result comes from: versions, git sha, each process's device, dtype, timings, what was scored or reused."""
    from mrb import __version__

    assert scores.stats is not None
    return {
        "mrb_version": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "device": devices[0].removeprefix("rank 0: "),
        "devices": devices,
        "dtype": settings.get("dtype"),
        "processes": world.size,
        "source_revision": scores.source_revision,
        **scores.stats.as_dict(),
    }
