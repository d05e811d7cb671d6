"""Benchmark 9a, the data path: MRB's runner against a naive loop that decodes images per pair.

Builds synthetic packs with the MRB mix (T→T, T→I, I→T, I→I; 100 candidates per query; real JPEG
bytes cut from scikit-image's sample photos) and scores them with a near-free reranker that still
decodes every image it is handed. Each measurement runs in its own process, so its peak RSS is its own.
Prints pairs/s and peak RSS for: MRB, the naive loop, and MRB with 10× the documents, and the peak
RSS of reading the packs alone, which separates the runner's memory from the pack reader's.

    python -m benchmarks.data_path [--queries 20] [--docs 100] [--workers 1] [--repeats 3]    (from the repository root)
"""

from __future__ import annotations

import argparse
import io
import json
import resource
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
from mrb.rerankers.base import Reranker

TYPES = ("t2t", "t2i", "i2t", "i2i")
DEPTH = 100
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel")
WORDS = ["red", "blue", "small", "large", "photo", "cat", "rocket", "coffee", "cup", "space", "cell", "star", "wheel", "colour", "light", "dark", "view", "close", "far"]


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


def build(root: Path, n_queries: int, n_docs: int) -> None:
    """One task per type in `root`: `n_queries` queries, each with 100 candidates out of `n_docs` documents."""
    rng = np.random.default_rng(0)
    for code in TYPES:
        q_side, d_side = code.split("2")
        q_images = jpegs(n_queries, seed=1) if q_side == "i" else [None] * n_queries
        d_images = jpegs(n_docs, seed=2) if d_side == "i" else [None] * n_docs
        queries = [Record(f"q{i}", None if q_side == "i" else text(rng, 8), q_images[i]) for i in range(n_queries)]
        docs = [Record(f"d{i}", None if d_side == "i" else text(rng, 40), d_images[i]) for i in range(n_docs)]
        rows, qrels = [], []
        for q in queries:
            picked = rng.choice(n_docs, DEPTH, replace=False)
            rows += [(q.id, f"d{j}", rank + 1, 1.0 - rank / DEPTH) for rank, j in enumerate(picked)]
            qrels.append((q.id, f"d{picked[3]}", 1))
        used = {r[1] for r in rows}
        name = f"Bench-{code.upper()}"
        write_pack(root / "packs" / name, queries=queries, documents=[d for d in docs if d.id in used],
                   candidates=pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"]),
                   qrels=pd.DataFrame(qrels, columns=["query_id", "doc_id", "relevance"]), manifest={"task": name})
        (root / f"{name}.yaml").write_text(f"name: {name}\ntype: {code}\ninstruction: Find it.\npack: packs/{name}\n")


def measure(mode: str, root: Path, workers: int, repeats: int) -> dict:
    """Run one mode `repeats` times in this process; the best pairs/s per task type and the peak RSS."""
    import mrb
    from mrb.tasks import load_tasks

    rates: dict[str, float] = {}
    for _ in range(repeats):
        if mode == "mrb":
            board = mrb.evaluate(Touch(), "all", task_dirs=[root], batch_size=32, workers=workers, quiet=True)
            for row in board.itertuples():
                stats = json.loads(row.provenance)
                rates[row.type] = max(rates.get(row.type, 0.0), stats["pairs"] / stats["seconds"])
        elif mode == "read":
            for task in load_tasks("all", task_dirs=[root]):
                read_pack(task.pack_path())
        else:
            reranker = Touch()
            for task in load_tasks("all", task_dirs=[root]):
                started = time.perf_counter()
                pack = read_pack(task.pack_path())
                c = pack.candidates
                for q, d in zip(c["query_id"], c["doc_id"]):
                    reranker.score([Pair(task.instruction, pack.queries[q], pack.documents[d])])
                rate = len(c) / (time.perf_counter() - started)
                rates[task.type.label] = max(rates.get(task.type.label, 0.0), rate)
    return {"rates": rates, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, which (unlike ru_maxrss) does not inherit the parent's peak at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, root: Path, workers: int, repeats: int) -> dict:
    command = ["--child", mode, "--root", str(root), "--workers", str(workers), "--repeats", str(repeats)]
    out = subprocess.run([sys.executable, "-m", "benchmarks.data_path", *command],
                         capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        sys.exit(f"the {mode} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--docs", type=int, default=100, help="documents per task (each query takes 100 of them)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best pairs/s is kept")
    parser.add_argument("--child", choices=("mrb", "naive", "read"))
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.root, args.workers, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "docs1x", Path(tmp) / "docs10x"
        build(small, args.queries, args.docs)
        build(large, args.queries, args.docs * 10)
        runs = {"mrb": child("mrb", small, args.workers, args.repeats), "naive": child("naive", small, args.workers, args.repeats),
                "mrb, 10x documents": child("mrb", large, args.workers, args.repeats)}
        reads = {size: child("read", root, 0, 1)["peak_rss_mb"] for size, root in (("1x", small), ("10x", large))}
    labels = list(runs["mrb"]["rates"])
    print(f"{args.queries} queries x {DEPTH} candidates per task, {args.docs} documents per task (10x: {args.docs * 10}); "
          f"384x288 JPEG; workers={args.workers}; best of {args.repeats}")
    print(f"{'run':<20}" + "".join(f"{label + ' pairs/s':>16}" for label in labels) + f"{'peak RSS MB':>14}")
    for name, run in runs.items():
        print(f"{name:<20}" + "".join(f"{run['rates'][label]:>16,.0f}" for label in labels) + f"{run['peak_rss_mb']:>14,.0f}")
    print("speed-up over the naive loop: " + ", ".join(
        f"{label} {runs['mrb']['rates'][label] / runs['naive']['rates'][label]:.1f}x" for label in labels))
    big, base = runs["mrb, 10x documents"]["peak_rss_mb"], runs["mrb"]["peak_rss_mb"]
    print(f"peak RSS with 10x documents / 1x: {big / base:.2f} ({base:,.0f} -> {big:,.0f} MB); reading the packs alone "
          f"(read_pack, no scoring) peaks at {reads['1x']:,.0f} -> {reads['10x']:,.0f} MB, so the runner adds "
          f"{base - reads['1x']:,.0f} MB at 1x and {big - reads['10x']:,.0f} MB at 10x")


if __name__ == "__main__":
    main()
