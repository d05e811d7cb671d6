"""Benchmark 9a, the data path: MRB's runner against a naive loop that decodes images per pair.

Builds synthetic packs with the MRB mix (T→T, T→I, I→T, I→I; 100 candidates per query; real JPEG
bytes cut from scikit-image's sample photos) and scores them with a near-free reranker that still
decodes every image it is handed. Each measurement runs in its own process, so its peak RSS is its own.
Prints pairs/s for MRB with a results folder (the score cache on), MRB without, the naive loop and
MRB with 10× the documents; the cache's cost in task time; image decodes against distinct images;
peak RSS of a run at default settings at 1× and 10× the documents, and of reading the packs alone,
which separates the runner's memory from the pack reader's. Every run times the whole task the same
way: read the pack, score every pair, compute the metrics.

    python -m benchmarks.data_path [--queries 50] [--docs 100] [--workers 1] [--repeats 5]    (from the repository root)
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mrb.data import Pair, Record, read_pack, write_pack
from mrb.metrics import judged_queries, per_query_table, strict_ranking
from mrb.rerankers.base import Reranker
from mrb.tasks import TaskType

TYPES = ("t2t", "t2i", "i2t", "i2i")
DEPTH = 100
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel")
WORDS = [
    "red",
    "blue",
    "small",
    "large",
    "photo",
    "cat",
    "rocket",
    "coffee",
    "cup",
    "space",
    "cell",
    "star",
    "wheel",
    "colour",
    "light",
    "dark",
    "view",
    "close",
    "far",
]


class Touch(Reranker):
    """Near-free: decodes both sides' images (RGB), then scores by the first pixel."""

    name = "touch"

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        out = []
        for p in pairs:
            q, d = p.query.image(), p.document.image()
            out.append(float(sum((d or q or Image.new("RGB", (1, 1))).getpixel((0, 0)))))
        return out


def jpegs(n: int, seed: int) -> list[bytes]:
    """`n` distinct JPEGs: random crops of the sample photos, scaled to 384×288, quality 85."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB") for name in PHOTOS]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.5, 0.9)), int(h * rng.uniform(0.5, 0.9))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        buf = io.BytesIO()
        photo.crop((x, y, x + cw, y + ch)).resize((384, 288)).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


def build(root: Path, n_queries: int, n_docs: int) -> dict[str, float]:
    """One task per type in `root`: `n_queries` queries, each with 100 candidates out of `n_docs` documents.

    Returns, per image task, the image uses per distinct image (how many decodes the naive loop makes for
    each one of MRB's, the ceiling of MRB's speed-up when decoding dominates) and the distinct images.
    """
    rng = np.random.default_rng(0)
    reuse, distinct = {}, {}
    for code in TYPES:
        q_side, d_side = code.split("2")
        q_images = jpegs(n_queries, seed=1) if q_side == "i" else [None] * n_queries
        d_images = jpegs(n_docs, seed=2) if d_side == "i" else [None] * n_docs
        # query texts of 4 to 60 words: several length buckets, as real tasks have
        queries = [
            Record(f"q{i}", None if q_side == "i" else text(rng, int(rng.integers(4, 61))), q_images[i]) for i in range(n_queries)
        ]
        docs = [Record(f"d{i}", None if d_side == "i" else text(rng, 40), d_images[i]) for i in range(n_docs)]
        rows, qrels = [], []
        for q in queries:
            picked = rng.choice(n_docs, DEPTH, replace=False)
            rows += [(q.id, f"d{j}", rank + 1, 1.0 - rank / DEPTH) for rank, j in enumerate(picked)]
            qrels.append((q.id, f"d{picked[3]}", 1))
        used = {r[1] for r in rows}
        if code != "t2t":
            uses = len(rows) * ((q_side == "i") + (d_side == "i"))
            images = (len(queries) if q_side == "i" else 0) + (len(used) if d_side == "i" else 0)
            reuse[TaskType(code).label], distinct[TaskType(code).label] = uses / images, images
        name = f"Bench-{code.upper()}"
        write_pack(
            root / "packs" / name,
            queries=queries,
            documents=[d for d in docs if d.id in used],
            candidates=pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"]),
            qrels=pd.DataFrame(qrels, columns=["query_id", "doc_id", "relevance"]),
            manifest={"task": name},
        )
        (root / f"{name}.yaml").write_text(f"name: {name}\ntype: {code}\ninstruction: Find it.\npack: packs/{name}\n")
    return reuse, distinct


def mrb_run(root: Path, workers: int, output: Path | None) -> dict[str, dict]:
    """One MRB run over every task in `root` at the default settings (with a results folder, and so the score
    cache, when `output` is given): per task type, pairs/s (the task's wall time: read, score, measure), image
    decodes and fsyncs of the cache."""
    import mrb

    board = mrb.evaluate(Touch(), "all", task_dirs=[root], workers=workers, output_dir=output, quiet=True)
    stats = {row.type: json.loads(row.provenance) for row in board.itertuples()}
    return {
        label: {
            "rate": s["pairs"] / s["seconds"],
            "decodes": s["decodes"],
            "syncs": s["cache_syncs"],
            "cache": s["cache_seconds"] / s["seconds"],
        }
        for label, s in stats.items()
    }


def mrb_rates(root: Path, workers: int, output: Path | None = None) -> dict[str, float]:
    return {label: run["rate"] for label, run in mrb_run(root, workers, output).items()}


def naive_rates(root: Path) -> dict[str, float]:
    """The naive loop over every task in `root`: one pair per call, each image decoded for every pair it is in."""
    from mrb.tasks import load_tasks

    reranker, rates = Touch(), {}
    for task in load_tasks("all", task_dirs=[root]):
        started = time.perf_counter()
        pack = read_pack(task.pack_path())
        c = pack.candidates
        scores = [
            reranker.score([Pair(task.instruction, pack.queries[q], pack.documents[d])])[0]
            for q, d in zip(c["query_id"], c["doc_id"])
        ]
        # the same metrics as MRB's run, so both time the whole task: read, score, measure
        per_query_table(
            task.metric,
            judged_queries(pack.qrels).qrels,
            strict_ranking(c, np.array(scores)),
            strict_ranking(c, np.zeros(len(c))),
        )
        rates[task.type.label] = len(c) / (time.perf_counter() - started)
    return rates


def measure(mode: str, root: Path, workers: int, repeats: int) -> dict:
    """One measurement in this process.

    ``speed``: `repeats` rounds of MRB then the naive loop, in alternation, so both meet the same
    machine load; the best pairs/s of each and every round's MRB/naive ratio per task type.
    ``mrb`` and ``read``: one MRB run, or reading the packs alone, for the peak RSS.
    """
    from mrb.tasks import load_tasks

    if mode == "read":
        for task in load_tasks("all", task_dirs=[root]):
            read_pack(task.pack_path())
        return {"peak_rss_mb": peak_rss_mb()}
    if mode == "mrb":
        with tempfile.TemporaryDirectory() as out:
            return {"runs": mrb_run(root, workers, Path(out) / "results"), "peak_rss_mb": peak_rss_mb()}
    best: dict[str, dict[str, float]] = {"mrb": {}, "no cache": {}, "naive": {}}
    ratios: dict[str, list[float]] = {}
    cache_costs: dict[str, list[float]] = {}
    for round_ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            cached = mrb_rates(root, workers, Path(out) / f"results{round_}")  # a fresh folder: the cache is written
        uncached, slow = mrb_rates(root, workers), naive_rates(root)
        for label in cached:
            for name, rate in (("mrb", cached[label]), ("no cache", uncached[label]), ("naive", slow[label])):
                best[name][label] = max(best[name].get(label, 0.0), rate)
            ratios.setdefault(label, []).append(cached[label] / slow[label])
            cache_costs.setdefault(label, []).append(uncached[label] / cached[label] - 1)
    return {"best": best, "ratios": ratios, "cache_costs": cache_costs}


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, which (unlike ru_maxrss) does not inherit the parent's peak at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, root: Path, workers: int, repeats: int) -> dict:
    command = ["--child", mode, "--root", str(root), "--workers", str(workers), "--repeats", str(repeats)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_path", *command],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if out.returncode != 0:
        sys.exit(f"the {mode} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--docs", type=int, default=100, help="documents per task (each query takes 100 of them)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds of MRB and the naive loop")
    parser.add_argument("--child", choices=("speed", "mrb", "read"))
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.root, args.workers, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "docs1x", Path(tmp) / "docs10x"
        reuse, distinct = build(small, args.queries, args.docs)
        build(large, args.queries, args.docs * 10)
        speed = child("speed", small, args.workers, args.repeats)
        runs = {"1x": child("mrb", small, args.workers, 1), "10x": child("mrb", large, args.workers, 1)}
        reads = {size: child("read", root, 0, 1)["peak_rss_mb"] for size, root in (("1x", small), ("10x", large))}
    labels = list(speed["best"]["mrb"])
    print(
        f"{args.queries} queries x {DEPTH} candidates per task, {args.docs} documents per task (10x: {args.docs * 10}); "
        f"queries of 4-60 words; 384x288 JPEG; default settings, workers={args.workers}; "
        f"{args.repeats} alternating rounds of MRB (with a results folder, so the score cache, and without) and the naive loop"
    )
    print(f"{'best pairs/s':<22}" + "".join(f"{label:>10}" for label in labels))
    for name in ("mrb", "no cache", "naive"):
        print(f"{name:<22}" + "".join(f"{speed['best'][name][label]:>10,.0f}" for label in labels))
    print(
        f"{'mrb, 10x documents':<22}"
        + "".join(f"{runs['10x']['runs'][label]['rate']:>10,.0f}" for label in labels)
        + "  (one run)"
    )
    print(
        "speed-up over the naive loop, median of the rounds (lowest-highest): "
        + ", ".join(f"{label} {statistics.median(r):.1f}x ({min(r):.1f}-{max(r):.1f})" for label, r in speed["ratios"].items())
    )
    print(
        "the score cache's share of the task time (reading and appending it, timed inside the run): "
        + ", ".join(f"{label} {100 * run['cache']:.1f}%" for label, run in runs["1x"]["runs"].items())
        + "; fsyncs per task: "
        + ", ".join(f"{label} {run['syncs']}" for label, run in runs["1x"]["runs"].items())
    )
    print(
        "a results folder's cost in task time (none / with one - 1: the cache, the lock and the result files), median of "
        "the rounds: " + ", ".join(f"{label} {100 * statistics.median(c):+.1f}%" for label, c in speed["cache_costs"].items())
    )
    print(
        "image decodes / distinct images (1x): "
        + ", ".join(f"{label} {runs['1x']['runs'][label]['decodes']}/{distinct[label]}" for label in distinct)
        + "; image uses per distinct image (the naive loop's decodes per MRB decode): "
        + ", ".join(f"{label} {value:.0f}" for label, value in reuse.items())
    )
    big, base = runs["10x"]["peak_rss_mb"], runs["1x"]["peak_rss_mb"]
    print(
        f"peak RSS of an MRB run (default settings, results folder) with 10x documents / 1x: {big / base:.2f} "
        f"({base:,.0f} -> {big:,.0f} MB); reading the packs alone (read_pack, no scoring) peaks at {reads['1x']:,.0f} -> "
        f"{reads['10x']:,.0f} MB, so the runner adds {base - reads['1x']:,.0f} MB at 1x and {big - reads['10x']:,.0f} MB at 10x"
    )


if __name__ == "__main__":
    main()
