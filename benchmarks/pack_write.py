"""Benchmark of item 4 of issue 12: peak RSS of writing a pack of 3k and of 30k images, side by side.

Each measurement runs in its own process, so its peak RSS (``ru_maxrss``) is its own; the RSS of the
process once its imports are done is printed beside it. Images are noise JPEGs of about 25 KB, each
made distinct by a counter after its end-of-image marker (so Parquet cannot share their bytes; a
30k-image pack is about 750 MB, as in the issue). Three ways of writing the same pack are measured:

- ``write_pack, streamed``: `mrb.data.write_pack` fed a generator of records (images made on the fly);
- ``candidates import``: the whole builder path of your own data, `mrb.candidates.import_run` from a
  local MTEB-2-layout folder (one Parquet corpus with the images embedded, read through ``datasets``)
  and a TREC run listing every image, into the pack;
- ``write_pack, from a list``: the same call handed a list of records with their images in memory,
  as builders did before they streamed (the cost that streaming removes).

Each cell is the median of `--repeats` processes (the largest peak of the 30k runs is printed
beside it: the allocator's timing moves a peak by some tens of MiB from run to run).

    python -m benchmarks.pack_write [--sizes 3000 30000] [--repeats 3] [--keep DIR]    (from the repository root)
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

QUERIES = 100  # each query lists SIZE / QUERIES images
DISTINCT = 64  # distinct noise pictures, cycled; every image's bytes are made unique (`image`)
WAYS = ("streamed", "import", "list")
LABELS = {
    "streamed": "write_pack, streamed",
    "import": "candidates import (local folder → pack)",
    "list": "write_pack, from a list",
}


def jpegs() -> list[bytes]:
    """`DISTINCT` noise JPEGs of about 25 KB each."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(DISTINCT):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(150, 180, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def image(pictures: list[bytes], i: int) -> bytes:
    """Image `i`: a picture followed by its number, after the end-of-image marker that decoders stop at."""
    return pictures[i % DISTINCT] + i.to_bytes(8, "big")


def frames(size: int):
    import pandas as pd

    per = size // QUERIES
    rows = [(f"q{q:03d}", f"d{q * per + r:06d}", r + 1, float(per - r)) for q in range(QUERIES) for r in range(per)]
    candidates = pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"])
    qrels = pd.DataFrame(
        [(f"q{q:03d}", f"d{q * per:06d}", 1) for q in range(QUERIES)], columns=["query_id", "doc_id", "relevance"]
    )
    return candidates, qrels


def records(size: int) -> Iterator:
    from mrb.data import Record

    pictures = jpegs()
    for i in range(size):
        yield Record(f"d{i:06d}", None, image(pictures, i))


def write_source(folder: Path, size: int) -> Path:
    """A local MTEB-2-layout folder of `size` images (README-declared configs, as MTEB writes them) and its run."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from datasets import Features, Value
    from datasets import Image as HFImage

    pictures = jpegs()
    features = Features({"id": Value("string"), "image": HFImage()})
    (folder / "corpus").mkdir(parents=True)
    with pq.ParquetWriter(folder / "corpus" / "test-00000-of-00001.parquet", features.arrow_schema) as writer:
        for start in range(0, size, 256):
            ids = [f"d{i:06d}" for i in range(start, min(size, start + 256))]
            blobs = [{"bytes": image(pictures, int(i[1:])), "path": None} for i in ids]
            writer.write_table(pa.table({"id": ids, "image": blobs}, schema=features.arrow_schema))
    candidates, qrels = frames(size)
    tables = {
        "queries": pa.table({"id": [f"q{q:03d}" for q in range(QUERIES)], "text": [f"query {q}" for q in range(QUERIES)]}),
        "default": pa.table({"query-id": qrels["query_id"], "corpus-id": qrels["doc_id"], "score": qrels["relevance"]}),
    }
    for config, table in tables.items():
        (folder / config).mkdir()
        pq.write_table(table, folder / config / "test-00000-of-00001.parquet")
    configs = [
        {"config_name": c, "data_files": [{"split": "test", "path": f"{c}/test-00000-of-00001.parquet"}]}
        for c in ("corpus", "queries", "default")
    ]
    (folder / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}, sort_keys=False) + "---\n")
    run = folder.parent / "run.trec"
    run.write_text("".join(f"{q} Q0 {d} {r} {s} bench\n" for q, d, r, s in candidates.itertuples(index=False)))
    return run


def child(way: str, size: int, root: Path) -> None:
    """One measurement: write the pack, print its size, seconds and the process's peak RSS as JSON."""
    import mrb.candidates  # noqa: F401  (every way pays the same imports)
    from mrb.data import write_pack

    imported_mib = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    started = time.perf_counter()
    if way == "import":
        from mrb.candidates import import_run
        from mrb.tasks import TaskSpec

        task = TaskSpec(
            name="Bench-T2I",
            type="t2i",
            instruction="x",
            depth=size // QUERIES,
            source={"layout": "mteb2", "path": str(root / "source")},
        )
        pack = import_run(task, root / "run.trec", out=root / "packs", data_dir=root / "data").pack
    else:
        candidates, qrels = frames(size)
        from mrb.data import Record

        queries = [Record(f"q{q:03d}", f"query {q}") for q in range(QUERIES)]
        documents = records(size) if way == "streamed" else list(records(size))
        pack = write_pack(
            root / "packs" / way,
            queries=queries,
            documents=documents,
            candidates=candidates,
            qrels=qrels,
            manifest={"task": "bench"},
        )
    seconds = time.perf_counter() - started
    megabytes = sum(p.stat().st_size for p in pack.iterdir()) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak, "imported_mib": imported_mib, "pack_mib": megabytes, "seconds": seconds}))


def measure(way: str, size: int, root: Path) -> dict:
    """One child process writing one pack (and what it wrote, removed again)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.pack_write", "--child", way, str(size), str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(root / "packs", ignore_errors=True)
    shutil.rmtree(root / "data", ignore_errors=True)  # each import converts the folder afresh, as a first import does
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(runs: list[dict]) -> dict:
    """The run of median peak RSS, with the largest peak among the runs."""
    middle = sorted(runs, key=lambda r: r["peak_mib"])[len(runs) // 2]
    return {**middle, "largest_mib": max(r["peak_mib"] for r in runs), "seconds": statistics.median(r["seconds"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[3000, 30000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--repeats", type=int, default=3, help="processes per cell; the median is printed (default 3)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]))
        return 0
    base = args.keep or Path(tempfile.mkdtemp(prefix="mrb-pack-write-"))
    try:
        results: dict[tuple[str, int], dict] = {}
        for size in args.sizes:
            root = base / str(size)
            write_source(root / "source", size)
            for way in WAYS:
                results[(way, size)] = median([measure(way, size, root) for _ in range(args.repeats)])
        small, large = args.sizes
        print(
            f"writing a pack of {small:,} and of {large:,} images "
            f"(~{results[('streamed', large)]['pack_mib'] / large * 1024:.0f} KB each; one process per run)"
        )
        print(f"peak RSS, median of {args.repeats} (in brackets: above the RSS once the imports are done)\n")
        print(
            f"| way | {small:,} images | {large:,} images | ratio | largest ({large:,}) | pack ({large:,}) | seconds ({large:,}) |"
        )
        print("|---|---|---|---|---|---|---|")
        for way in WAYS:
            a, b = results[(way, small)], results[(way, large)]
            cells = [f"{r['peak_mib']:,.0f} MiB (+{r['peak_mib'] - r['imported_mib']:,.0f})" for r in (a, b)]
            print(
                f"| {LABELS[way]} | {cells[0]} | {cells[1]} | {b['peak_mib'] / a['peak_mib']:.2f}× "
                f"| {b['largest_mib']:,.0f} MiB | {b['pack_mib']:,.0f} MiB | {b['seconds']:.1f} |"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
