"""What `mrb candidates` does for a selection of tasks: build, verify, summarise and publish packs."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from mrb.candidates.build import RECALL, SHARD_SIZE, BuildResult, Rank, build_pack, subset_pack
from mrb.candidates.encoders import get_encoder
from mrb.candidates.given import top_ranked_pack
from mrb.data import read_pack
from mrb.errors import MRBError, hub_failure
from mrb.evaluation import TaskEvaluator
from mrb.metrics import FIRST_STAGE_PREFIX
from mrb.sources import SourceReader
from mrb.tasks import GIVEN, SampleSpec, TaskSpec, resolve_data_dir

LOG = logging.getLogger(__name__)


def _units(tasks: list[TaskSpec]) -> list[TaskSpec]:
    return [unit for task in tasks for unit in task.units()]


def build_candidates(
    tasks: list[TaskSpec],
    retriever: str | None = None,
    *,
    checkpoint: str | None = None,
    depth: int | None = None,
    sample: SampleSpec | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 32,
    shard_size: int | None = None,
    push_to_hub: str | None = None,
    **encoder_options: Any,
) -> list[BuildResult]:
    """Build the pack of every unit of `tasks` with one retriever (default: each task's `first_stage`).

    A sampled variant (``ArguAna-lite``) whose full task already has a pack by the same retriever
    is cut from that pack (`subset_pack`) without loading a model. Every other unit's source is
    checked before any model loads, and each encoder is loaded once per retriever; the retriever
    ``given`` takes the lists that come with the source (`top_ranked_pack`). With `push_to_hub`,
    each finished pack is uploaded to that dataset repo (`push_pack`).
    """
    units = _units(tasks)
    unnamed = [unit.name for unit in units if not (retriever or unit.first_stage)]
    if unnamed:
        raise MRBError(f"task(s) {', '.join(unnamed)} declare no first_stage: name one with --retriever")
    names: dict[str, str] = {unit.name: str(retriever or unit.first_stage) for unit in units}
    for unit in units:
        if unit.source is None:
            raise MRBError(f"task {unit.name!r} has no source to build a pack from (its pack is {unit.pack!r})")
    results: dict[str, BuildResult | None] = {}

    def done(unit: TaskSpec, result: BuildResult | None) -> None:
        results[unit.name] = result
        if result is not None and push_to_hub:
            push_pack(result.pack, push_to_hub)

    for unit in units:
        full = unit.sampled_from
        if (
            sample is None
            and full is not None
            and unit.sample is not None
            and full.pack_location(data_dir).is_dir()
            and Rank.from_env().rank == 0
        ):
            done(
                unit,
                subset_pack(
                    full.pack_path(data_dir),
                    unit,
                    unit.sample,
                    retriever=names[unit.name],
                    depth=depth,
                    out=out,
                    data_dir=data_dir,
                ),
            )
    pending = [unit for unit in units if results.get(unit.name) is None]
    readers = {unit.name: SourceReader(unit, data_dir) for unit in pending}  # each source opened (and hashed) once
    for reader in readers.values():
        reader.check()  # every layout problem surfaces before any weights load
    encoders: dict[str, Any] = {}
    for unit in pending:
        name, reader = names[unit.name], readers[unit.name]
        if name == GIVEN:
            done(unit, top_ranked_pack(unit, reader, depth=depth, sample=sample, out=out, data_dir=data_dir))
            continue
        if name not in encoders:
            encoders[name] = get_encoder(name, checkpoint, **encoder_options)
        done(
            unit,
            build_pack(
                unit,
                encoders[name],
                retriever=name,
                reader=reader,
                depth=depth,
                sample=sample,
                out=out,
                data_dir=data_dir,
                batch_size=batch_size,
                shard_size=shard_size or SHARD_SIZE,
            ),
        )
    return [result for unit in units if (result := results.get(unit.name)) is not None]


def pack_folders(tasks: list[TaskSpec], data_dir: str | Path | None = None) -> list[tuple[TaskSpec, Path]]:
    """(unit, existing pack folder) for every unit; an `MRBError` naming the build command when one is missing."""
    return [(unit, unit.pack_path(data_dir)) for unit in _units(tasks)]


def ensure_packs(tasks: list[TaskSpec], data_dir: str | Path | None = None, *, build_missing: bool = False) -> None:
    """Make sure every unit has a pack before a run: build the missing ones with their own first
    stage when `build_missing`, else fail with the command that builds them."""
    missing = [unit for unit in _units(tasks) if unit.pack is None and not unit.pack_location(data_dir).is_dir()]
    if not missing:
        return
    if not build_missing:
        missing[0].pack_path(data_dir)  # raises, naming the command that builds it
    build_candidates(missing, data_dir=data_dir)


def verify_packs(tasks: list[TaskSpec], data_dir: str | Path | None = None) -> list[tuple[TaskSpec, Path]]:
    """Re-hash and re-check every unit's pack (`read_pack`); returns the verified (unit, folder) pairs."""
    folders = pack_folders(tasks, data_dir)
    for _, folder in folders:
        read_pack(folder)
    return folders


def pack_stats(packs: list[tuple[TaskSpec, Path]]) -> pd.DataFrame:
    """One row per (unit, pack folder): retriever, depth, queries, pairs, first-stage metric and Recall@100."""
    rows = []
    for unit, folder in packs:
        pack = read_pack(folder)
        evaluator = TaskEvaluator(unit, pack)
        scores = evaluator.first_stage()
        retriever = pack.manifest.get("retriever")
        rows.append(
            {
                "task": unit.name,
                # a pack built elsewhere (the bundled mini packs) may describe its retriever in prose
                "retriever": retriever.get("name")
                if isinstance(retriever, dict)
                else textwrap.shorten(str(retriever), 32, placeholder="…"),
                "depth": pack.manifest.get("depth"),
                "queries": len(pack.queries),
                "pairs": len(evaluator.candidates),
                "metric": unit.metric,
                "first_stage": scores.first_stage_value,
                RECALL: scores.measures[f"{FIRST_STAGE_PREFIX}{RECALL}"],
            }
        )
    return pd.DataFrame(rows)


def pull_packs(
    tasks: list[TaskSpec],
    repo: str,
    *,
    data_dir: str | Path | None = None,
    revision: str | None = None,
) -> list[tuple[TaskSpec, Path]]:
    """Fetch every unit's pack from a hub dataset repo laid out by `push_pack` (``<task>/``), verify
    it, and move it into the data dir (replacing an older copy). Returns (unit, pack folder) pairs."""
    from huggingface_hub import snapshot_download

    units = _units(tasks)
    declared = [u.name for u in units if u.pack is not None]
    if declared:
        raise MRBError(f"task(s) {', '.join(declared)} ship their own pack; nothing to pull")
    root = resolve_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    pulled = []
    with tempfile.TemporaryDirectory(dir=root, prefix=".pull-") as tmp:
        try:
            snapshot_download(
                repo, repo_type="dataset", revision=revision, local_dir=tmp, allow_patterns=[f"{u.name}/*" for u in units]
            )
        except Exception as exc:  # the hub fails in many ways: offline, gated, no such repository or revision
            elsewhere = f"the same `mrb candidates pull`, then copy {root / 'packs'} here"
            reason = hub_failure(exc, repo, revision, "dataset", elsewhere) or str(exc)
            raise MRBError(f"cannot pull candidate packs from the hub dataset {repo}: {reason}") from exc
        for unit in units:
            fetched = Path(tmp) / unit.name
            if not fetched.is_dir():
                raise MRBError(f"{repo} has no pack for task {unit.name!r} (no folder {unit.name}/)")
            read_pack(fetched)  # re-hash and check before it replaces anything
            target = unit.pack_location(data_dir)
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(fetched, target)
            pulled.append((unit, target))
    return pulled


def push_pack(folder: str | Path, repo: str, *, token: str | None = None) -> str:
    """Upload a pack folder to the hub dataset `repo` under ``<task>/`` (huggingface_hub's upload_folder).

    Needs network access and a write token; the manifest's hashes travel with the pack, so
    `mrb candidates verify` checks a downloaded copy.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    task = json.loads((folder / "manifest.json").read_text())["task"]
    api = HfApi(token=token)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo,
        repo_type="dataset",
        folder_path=str(folder),
        path_in_repo=task,
        commit_message=f"MRB candidate pack {task}",
    )
    LOG.info("%s: pushed to %s (%s)", task, repo, commit)
    return str(commit)
