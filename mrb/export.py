"""Results for other tools: MTEB-style per-task JSON (TREC run files are written by `mrb run`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mrb.io import atomic_write_bytes, contained
from mrb.metrics import FIRST_STAGE_MEASURES, FIRST_STAGE_PREFIX, RERANKED_MEASURES
from mrb.results import model_dirname

MTEB_REVISION = "no_revision_available"  # MTEB's folder name when a model revision is unknown
MTEB_SPLIT = "test"
# The MTEB release whose TaskResult schema the export follows (the interop test loads the files with
# the installed mteb). MRB writes it rather than null, which MTEB tools read as a pre-1.11 result.
MTEB_VERSION = "2.26.24"
TASK_PREFIX = "MRB-"  # MRB's tasks rerank fixed candidate lists: never to pass for MTEB's full-corpus tasks
NO_SOURCE = "revision_not_applicable"  # MTEB's dataset revision of a task without one (a pack-only task)


def mteb_task_name(task: str) -> str:
    """The name an MRB task carries in MTEB results: ``MRB-<task>``."""
    return TASK_PREFIX + task


def mteb_score_name(measure: str) -> str:
    """MTEB's key for an ir_measures name: nDCG@10 → ndcg_at_10, RR@10 → mrr_at_10, R@100 → recall_at_100."""
    name, _, cutoff = measure.partition("@")
    base = {"ndcg": "ndcg", "rr": "mrr", "r": "recall", "p": "precision", "judged": "judged"}.get(name.lower(), name.lower())
    return f"{base}_at_{cutoff}" if cutoff else base


def mteb_result(row: pd.Series) -> dict:
    """One (model, task) leaderboard row as an MTEB TaskResult dict: the task named ``MRB-<task>``, the
    revision of its source (hub commit or local content digest; the pack hash rides along as
    ``mrb_pack_hash``) and a real ``mteb_version``."""
    scores = {mteb_score_name(row["metric"]): row["value"], "main_score": row["value"]}
    scores.update({mteb_score_name(m): row[m] for m in RERANKED_MEASURES})
    scores.update({FIRST_STAGE_PREFIX + mteb_score_name(m): row[FIRST_STAGE_PREFIX + m] for m in FIRST_STAGE_MEASURES})
    scores.update(
        {
            FIRST_STAGE_PREFIX + mteb_score_name(row["metric"]): row["first_stage_value"],
            "main_score_ci95_low": row["ci_low"],
            "main_score_ci95_high": row["ci_high"],
            "hf_subset": "default",
            "languages": ["eng-Latn"],
        }
    )
    return {
        "dataset_revision": json.loads(row["provenance"] or "{}").get("source_revision") or NO_SOURCE,
        "task_name": mteb_task_name(row["task"]),
        "mteb_version": MTEB_VERSION,
        "mrb_version": row["mrb_version"],
        "mrb_pack_hash": row["pack_hash"],
        "scores": {MTEB_SPLIT: [scores]},
        "evaluation_time": row["seconds"],
        "kg_co2_emissions": None,
    }


def export_mteb(board: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write `<out>/<model>/no_revision_available/MRB-<task>.json` per ok row and a `model_meta.json` per model."""
    out = Path(out_dir)
    written = []
    for model, rows in board[board["status"] == "ok"].groupby("model", sort=False):
        folder = contained(out, model_dirname(model), MTEB_REVISION)
        atomic_write_bytes(folder / "model_meta.json", json.dumps({"name": model, "revision": None}, indent=2).encode())
        for _, row in rows.iterrows():
            path = contained(folder, f"{mteb_task_name(row['task'])}.json")  # a task name read back from a file stays inside
            atomic_write_bytes(path, json.dumps(mteb_result(row), indent=2, ensure_ascii=False).encode())
            written.append(path)
    return written
