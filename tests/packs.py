"""Builders for small task catalogues in a temp folder (used by several test modules)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mrb.data import Record, write_pack


def write_task(
    root: Path,
    name: str,
    *,
    type_code: str = "t2t",
    queries: list[Record],
    documents: list[Record],
    candidates: list[tuple[str, str, int, float]],
    qrels: list[tuple[str, str, int]],
    extra_yaml: str = "",
    depth: int = 10,
    pack_depth: int = 10,
) -> Path:
    """Write `<root>/<name>.yaml` (reranking `depth`) and its pack `<root>/packs/<name>/` (built to `pack_depth`);
    return the YAML path."""
    write_pack(
        root / "packs" / name,
        queries=queries,
        documents=documents,
        candidates=pd.DataFrame(candidates, columns=["query_id", "doc_id", "rank", "score"]),
        qrels=pd.DataFrame(qrels, columns=["query_id", "doc_id", "relevance"]),
        manifest={"task": name, "retriever": "test", "depth": pack_depth},
    )
    path = root / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntype: {type_code}\ninstruction: Find the answer.\ndepth: {depth}\npack: packs/{name}\n{extra_yaml}"
    )
    return path


def small_text_task(root: Path, name: str = "Small-T2T", **kwargs) -> Path:
    """Two queries over four text documents, with graded labels, a tie and a judged 0."""
    docs = [
        Record(f"d{i}", f"document number {i} about {topic}")
        for i, topic in enumerate(["cats", "dogs", "cats and dogs", "boats"])
    ]
    return write_task(
        root,
        name,
        queries=[Record("q1", "cats"), Record("q2", "boats")],
        documents=docs,
        candidates=[
            ("q1", "d1", 1, 0.9),
            ("q1", "d0", 2, 0.8),
            ("q1", "d2", 3, 0.8),
            ("q1", "d3", 4, 0.1),
            ("q2", "d0", 1, 0.5),
            ("q2", "d3", 2, 0.4),
        ],
        qrels=[("q1", "d0", 2), ("q1", "d2", 1), ("q1", "d1", 0), ("q2", "d3", 1)],
        **kwargs,
    )


def combo_task(root: Path) -> None:
    """Composite task Combo: part a = Small-T2T (two queries), part b = one query whose only
    relevant document is at first-stage rank 2 (first stage 1/log2(3))."""
    small_text_task(root, "PartA")
    write_task(
        root,
        "PartB",
        queries=[Record("q1", "x")],
        documents=[Record("a", "x"), Record("b", "y")],
        candidates=[("q1", "a", 1, 1.0), ("q1", "b", 2, 0.5)],
        qrels=[("q1", "b", 1)],
    )
    for name in ("PartA", "PartB"):
        (root / f"{name}.yaml").unlink()  # the packs stay; only the composite is a task
    source = "source: {layout: beir, path: org/data, revision: " + "a" * 40 + "}"
    (root / "combo.yaml").write_text(
        "name: Combo\ntype: t2t\ninstruction: Find it.\ndepth: 10\nparts:\n"
        f"  - {{name: a, pack: packs/PartA, {source}}}\n"
        f"  - {{name: b, pack: packs/PartB, {source}}}\n"
    )


def candidate_lists(pack) -> dict[str, list[str]]:
    """Query id → doc ids in first-stage order."""
    return {qid: group["doc_id"].tolist() for qid, group in pack.candidates.groupby("query_id", sort=False)}


def qrels_dict(pack) -> dict[str, dict[str, int]]:
    """Query id → {doc id: graded relevance}."""
    out: dict[str, dict[str, int]] = {}
    for qid, did, rel in pack.qrels[["query_id", "doc_id", "relevance"]].itertuples(index=False):
        out.setdefault(qid, {})[did] = int(rel)
    return out
