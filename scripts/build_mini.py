"""Build MRB's bundled offline ``mini`` benchmark.

Writes five small tasks, one per modality pair, into the task catalogue (``tasks/`` by default):

- ``tasks/mini/<task>.yaml``       the task specs,
- ``tasks/mini/packs/<task>/``     their packs (written with ``mrb.data.write_pack``),
- ``tasks/suites/mini.yaml``       the ``mini`` suite naming them.

Tasks (texts and relevance judgements live in ``scripts/mini_data.yaml``):

- MiniFacts-T2T     question → factual passage
- MiniPhotos-T2I    description → photo
- MiniPhotos-I2T    photo → caption
- MiniPhotoQA-IT2T  photo + question about it → factual passage
- MiniPhotos-I2I    new cut of a photo → the photo it was cut from

Images are real photos shipped by scikit-image (``skimage.data``) and scikit-learn
(``load_sample_images``), plus crops and grayscale variants of them, stored as RGB JPEG (longest
side at most 256 px, quality 85). Captions, passages and questions were written by hand for MRB.

The candidate lists come from a synthetic first stage, documented in each manifest's
``retriever`` field: a per-query score (BM25 for text, colour-histogram cosine for I→I) plus
seeded Gaussian noise, ranked; for a few queries the best relevant candidate is then removed on
purpose, the top 20 kept, and scores rounded to 3 decimals, which leaves some ties. The build is
deterministic: the same library versions give byte-identical packs.

Run from the repository root:  python scripts/build_mini.py [--out tasks]
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ir_measures
import numpy as np
import pandas as pd
import PIL
import skimage
import sklearn
import yaml
from PIL import Image
from rank_bm25 import BM25Okapi
from skimage import data as skimage_data
from sklearn.datasets import load_sample_images

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # write packs with this checkout's mrb, installed or not
from mrb.data import Pack, Record, read_pack, write_pack  # noqa: E402

DATA_FILE = Path(__file__).with_name("mini_data.yaml")
DEPTH = 20
MAX_SIDE = 256
JPEG_QUALITY = 85
SCORE_DECIMALS = 3
N_DROPPED = 2  # queries per task that lose their best relevant candidate
N_JUDGED_NEGATIVES = 2  # top non-relevant candidates per query judged 0
HISTOGRAM_BINS = 4  # per RGB channel
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "here",
        "how",
        "in",
        "into",
        "is",
        "it",
        "its",
        "like",
        "of",
        "on",
        "or",
        "she",
        "so",
        "that",
        "the",
        "their",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
    ]
)
REFERENCE = "scripts/build_mini.py (photos from scikit-image / scikit-learn; texts written for MRB)"


@dataclass(frozen=True)
class TaskDef:
    """One mini task: its spec fields and the first-stage noise settings."""

    name: str
    type: str
    instruction: str
    description: str
    seed: int
    noise: float  # standard deviation of the Gaussian noise added to first-stage scores


TASKS = [
    TaskDef(
        "MiniFacts-T2T",
        "t2t",
        "Given a question, find the passage that answers it.",
        "Hand-written factual questions against short passages on the topics of the mini photos.",
        seed=101,
        noise=0.2,
    ),
    TaskDef(
        "MiniPhotos-T2I",
        "t2i",
        "Find the photo that matches the description.",
        "Descriptions of scikit-image / scikit-learn sample photos and crops of them; other views "
        "of the described photo count as partially relevant.",
        seed=102,
        noise=0.15,
    ),
    TaskDef(
        "MiniPhotos-I2T",
        "i2t",
        "Find the caption that describes this photo.",
        "Photos and crops as queries, hand-written captions of every view as documents; captions "
        "of other views of the same photo count as partially relevant.",
        seed=103,
        noise=0.15,
    ),
    TaskDef(
        "MiniPhotoQA-IT2T",
        "it2t",
        "Given a photo and a question about it, find the passage that answers the question.",
        "Questions that need the photo to be understood (what is this, why does it look like "
        "this), answered by the passages of MiniFacts-T2T.",
        seed=104,
        noise=0.15,
    ),
    TaskDef(
        "MiniPhotos-I2I",
        "i2i",
        "Find the photo this image was cut from.",
        "New crops (some mirrored) of the sample photos as queries; the full photo is relevant, "
        "its other crops and grayscale variants partially relevant.",
        seed=105,
        noise=0.03,
    ),
]


@dataclass
class Material:
    """The parsed text file, the loaded photos and the encoded views."""

    data: dict[str, Any]  # scripts/mini_data.yaml
    photos: dict[str, Image.Image]
    views: dict[str, bytes]  # JPEG bytes by view id


@dataclass
class TaskData:
    """What a task builder produces before the first stage runs."""

    queries: list[Record]
    documents: list[Record]
    scores: np.ndarray  # (queries, documents) first-stage scores before noise
    qrels: dict[str, dict[str, int]]
    scoring: str  # how `scores` was computed, for the manifest
    photos: set[str]  # source photos whose pixels are in the pack


# ---------------------------------------------------------------- images


def load_photo(source: str) -> Image.Image:
    """Load a bundled sample photo as RGB: ``skimage.<function>`` or ``sklearn.<file name>``."""
    library, name = source.split(".", 1)
    if library == "sklearn":
        samples = load_sample_images()
        array = samples.images[[Path(f).name for f in samples.filenames].index(name)]
    else:
        array = getattr(skimage_data, name)()
        if isinstance(array, tuple):  # stereo pairs: keep the left image
            array = array[0]
    if array.dtype == bool:  # silhouettes: True is background
        array = np.where(array, 255, 0).astype(np.uint8)
    image = Image.fromarray(array)
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    return image.convert("RGB")


def cut(photo: Image.Image, box: list[float] | None, *, gray: bool = False, mirror: bool = False) -> Image.Image:
    """Crop a fractional box out of a photo, optionally grayscale (kept RGB) or mirrored."""
    if box is not None:
        width, height = photo.size
        left, top, right, bottom = box
        photo = photo.crop((round(left * width), round(top * height), round(right * width), round(bottom * height)))
    if gray:
        photo = photo.convert("L").convert("RGB")
    if mirror:
        photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return photo


def encode_jpeg(image: Image.Image) -> bytes:
    """Shrink so the longest side is at most MAX_SIDE and encode as baseline JPEG."""
    scale = MAX_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def color_histogram(jpeg: bytes) -> np.ndarray:
    """L2-normalised joint RGB histogram of a decoded JPEG."""
    with Image.open(io.BytesIO(jpeg)) as image:
        pixels = np.asarray(image.convert("RGB")) // (256 // HISTOGRAM_BINS)
    codes = (pixels[..., 0].astype(int) * HISTOGRAM_BINS + pixels[..., 1]) * HISTOGRAM_BINS + pixels[..., 2]
    hist = np.bincount(codes.ravel(), minlength=HISTOGRAM_BINS**3).astype(float)
    return hist / np.linalg.norm(hist)


# ---------------------------------------------------------------- first stage


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords, with a crude plural strip."""
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    words = [t for t in tokens if t not in STOPWORDS]
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def bm25_scores(queries: list[str], documents: list[str]) -> np.ndarray:
    """BM25 (Okapi, k1=1.5, b=0.75) of every query against every document, divided by each query's maximum."""
    index = BM25Okapi([tokenize(d) for d in documents])
    scores = np.array([index.get_scores(tokenize(q)) for q in queries])
    return scores / np.maximum(scores.max(axis=1, keepdims=True), 1e-9)


def first_stage(task: TaskDef, data: TaskData) -> tuple[pd.DataFrame, list[str]]:
    """Noisy ranking, deliberate misses, top DEPTH and rounding; returns candidates and the dropped queries."""
    rng = np.random.default_rng(task.seed)
    noisy = data.scores + rng.normal(0.0, task.noise, data.scores.shape)
    doc_ids = [d.id for d in data.documents]
    rankings = {}
    for row, query in zip(noisy, data.queries):
        order = np.argsort(-row, kind="stable")
        rankings[query.id] = [(doc_ids[j], float(row[j])) for j in order]

    def relevant_in_top(qid: str) -> list[tuple[int, str]]:
        grades = data.qrels[qid]
        return [(i, d) for i, (d, _) in enumerate(rankings[qid][:DEPTH]) if grades.get(d, 0) > 0]

    eligible = [q.id for q in data.queries if len(relevant_in_top(q.id)) >= 2]
    dropped = sorted(str(q) for q in rng.choice(eligible, size=N_DROPPED, replace=False))
    for qid in dropped:
        grades = data.qrels[qid]
        position, _ = min(relevant_in_top(qid), key=lambda hit: (-grades[hit[1]], hit[0]))
        del rankings[qid][position]

    rows = [
        (qid, did, rank, round(score, SCORE_DECIMALS))
        for qid, ranking in rankings.items()
        for rank, (did, score) in enumerate(ranking[:DEPTH], start=1)
    ]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"]), dropped


def judged_qrels(qrels: dict[str, dict[str, int]], candidates: pd.DataFrame) -> pd.DataFrame:
    """The graded qrels plus an explicit 0 for each query's top non-relevant candidates."""
    rows = [(qid, did, rel) for qid, grades in qrels.items() for did, rel in grades.items()]
    for qid, group in candidates.groupby("query_id", sort=True):
        negatives = [d for d in group.sort_values("rank")["doc_id"] if d not in qrels[qid]]
        rows += [(qid, did, 0) for did in negatives[:N_JUDGED_NEGATIVES]]
    frame = pd.DataFrame(rows, columns=["query_id", "doc_id", "relevance"])
    return frame.sort_values(["query_id", "doc_id"]).reset_index(drop=True)


# ---------------------------------------------------------------- tasks


def query_ids(n: int) -> list[str]:
    """q01, q02, … in the order the queries are listed."""
    return [f"q{i:02d}" for i in range(1, n + 1)]


def view_qrels(target: str, views: dict[str, Any], prefix: str = "") -> dict[str, int]:
    """The target view is relevant (2); the photo's other views are partially relevant (1)."""
    photo = views[target]["photo"]
    return {f"{prefix}{vid}": 2 if vid == target else 1 for vid, view in views.items() if view["photo"] == photo}


def build_t2t(m: Material) -> TaskData:
    """Questions → passages."""
    specs = m.data["t2t"]
    qids = query_ids(len(specs))
    documents = [Record(pid, text) for pid, text in m.data["passages"].items()]
    return TaskData(
        queries=[Record(qid, s["text"]) for qid, s in zip(qids, specs)],
        documents=documents,
        scores=bm25_scores([s["text"] for s in specs], [d.text for d in documents]),
        qrels={qid: s["qrels"] for qid, s in zip(qids, specs)},
        scoring="BM25 between the question and the passage",
        photos=set(),
    )


def build_it2t(m: Material) -> TaskData:
    """Photo + question → passages."""
    specs, views, photos = m.data["it2t"], m.data["views"], m.data["photos"]
    qids = query_ids(len(specs))
    documents = [Record(pid, text) for pid, text in m.data["passages"].items()]
    query_texts = [f"{s['text']} {photos[views[s['view']]['photo']]['tags']}" for s in specs]
    return TaskData(
        queries=[Record(qid, s["text"], m.views[s["view"]]) for qid, s in zip(qids, specs)],
        documents=documents,
        scores=bm25_scores(query_texts, [d.text for d in documents]),
        qrels={qid: s["qrels"] for qid, s in zip(qids, specs)},
        scoring="BM25 between the question plus hand-written tags of the query photo and the passage",
        photos={views[s["view"]]["photo"] for s in specs},
    )


def build_t2i(m: Material) -> TaskData:
    """Descriptions → views (images only)."""
    specs, views = m.data["t2i"], m.data["views"]
    qids = query_ids(len(specs))
    return TaskData(
        queries=[Record(qid, s["text"]) for qid, s in zip(qids, specs)],
        documents=[Record(vid, None, m.views[vid]) for vid in views],
        scores=bm25_scores([s["text"] for s in specs], [v["caption"] for v in views.values()]),
        qrels={qid: view_qrels(s["target"], views) for qid, s in zip(qids, specs)},
        scoring="BM25 between the description and the hand-written caption of each image (not in the pack)",
        photos={view["photo"] for view in views.values()},
    )


def build_i2t(m: Material) -> TaskData:
    """Views → captions of every view."""
    specs, views, photos = m.data["i2t"], m.data["views"], m.data["photos"]
    qids = query_ids(len(specs))
    documents = [Record(f"caption-{vid}", view["caption"]) for vid, view in views.items()]
    return TaskData(
        queries=[Record(qid, None, m.views[s["view"]]) for qid, s in zip(qids, specs)],
        documents=documents,
        scores=bm25_scores([photos[views[s["view"]]["photo"]]["tags"] for s in specs], [d.text for d in documents]),
        qrels={qid: view_qrels(s["view"], views, prefix="caption-") for qid, s in zip(qids, specs)},
        scoring=(
            "BM25 between hand-written tags of the query's source photo (a stand-in for an image "
            "embedding that cannot tell crops of one photo apart) and the caption"
        ),
        photos={views[s["view"]]["photo"] for s in specs},
    )


def build_i2i(m: Material) -> TaskData:
    """New cuts of photos → views."""
    specs, views = m.data["i2i"], m.data["views"]
    qids = query_ids(len(specs))
    queries = [
        Record(qid, None, encode_jpeg(cut(m.photos[s["photo"]], s["box"], mirror=s.get("mirror", False))))
        for qid, s in zip(qids, specs)
    ]
    documents = [Record(vid, None, m.views[vid]) for vid in views]
    query_hist = np.stack([color_histogram(q.image_bytes) for q in queries])
    doc_hist = np.stack([color_histogram(d.image_bytes) for d in documents])
    return TaskData(
        queries=queries,
        documents=documents,
        scores=query_hist @ doc_hist.T,
        qrels={qid: view_qrels(s["target"], views) for qid, s in zip(qids, specs)},
        scoring=f"cosine similarity of {HISTOGRAM_BINS}x{HISTOGRAM_BINS}x{HISTOGRAM_BINS}-bin RGB colour histograms",
        photos={view["photo"] for view in views.values()},
    )


BUILDERS = {"t2t": build_t2t, "it2t": build_it2t, "t2i": build_t2i, "i2t": build_i2t, "i2i": build_i2i}


def load_material() -> Material:
    """Read the texts, load every photo and encode every view."""
    data = yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))
    photos = {name: load_photo(photo["source"]) for name, photo in data["photos"].items()}
    views = {
        vid: encode_jpeg(cut(photos[view["photo"]], view.get("box"), gray=view.get("gray", False)))
        for vid, view in data["views"].items()
    }
    return Material(data, photos, views)


def retriever_note(task: TaskDef, data: TaskData) -> str:
    """The manifest's honest description of the synthetic first stage."""
    return (
        f"Synthetic first stage built for MRB (not GME or any trained retriever): {data.scoring}, "
        f"plus Gaussian noise (sd {task.noise}, numpy default_rng seed {task.seed}); documents ranked "
        f"by the noisy score; for {N_DROPPED} randomly chosen queries with at least two relevant "
        f"documents in the top {DEPTH}, the highest-graded of them is removed on purpose; top {DEPTH} "
        f"kept; scores rounded to {SCORE_DECIMALS} decimals (ties keep the pre-rounding order)."
    )


def write_task(task: TaskDef, data: TaskData, photo_credits: dict[str, str], out: Path) -> dict[str, Any]:
    """Run the first stage, write the pack and the task YAML; return summary statistics."""
    candidates, dropped = first_stage(task, data)
    qrels = judged_qrels(data.qrels, candidates)
    pack_dir = out / "mini" / "packs" / task.name
    write_pack(
        pack_dir,
        queries=data.queries,
        documents=data.documents,
        candidates=candidates,
        qrels=qrels,
        manifest={
            "task": task.name,
            "retriever": retriever_note(task, data),
            "depth": DEPTH,
            "source": (
                "Texts (captions, passages, questions) and graded qrels written by hand for MRB "
                "(scripts/mini_data.yaml); qrels also hold an explicit 0 for the top "
                f"{N_JUDGED_NEGATIVES} non-relevant candidates of each query. Images, if any: "
                "sample photos shipped with scikit-image (skimage.data) and scikit-learn "
                "(load_sample_images), cropped, some converted to grayscale or mirrored, resized "
                f"to at most {MAX_SIDE} px and re-encoded as JPEG; credits in photo_credits."
            ),
            "photo_credits": {name: photo_credits[name] for name in sorted(data.photos)},
            "built_by": "scripts/build_mini.py",
            "libraries": {
                "scikit-image": skimage.__version__,
                "scikit-learn": sklearn.__version__,
                "pillow": PIL.__version__,
            },
        },
    )
    spec = {
        "name": task.name,
        "type": task.type,
        "instruction": task.instruction,
        "metric": "nDCG@10",
        "depth": DEPTH,
        "pack": f"packs/{task.name}",
        "description": task.description,
        "reference": REFERENCE,
    }
    spec_text = yaml.safe_dump(spec, sort_keys=False, width=100)
    (out / "mini" / f"{task.name}.yaml").write_text(spec_text, encoding="utf-8")
    return summarize(task, read_pack(pack_dir), dropped)


def summarize(task: TaskDef, pack: Pack, dropped: list[str]) -> dict[str, Any]:
    """Counts and first-stage nDCG@10 of a written pack; exits on a broken judgement."""
    qrels = pack.qrels
    relevant = qrels[qrels["relevance"] > 0]
    unanswerable = set(pack.queries) - set(relevant["query_id"])
    if unanswerable:
        raise SystemExit(f"{task.name}: queries without a relevant document: {sorted(unanswerable)}")
    unknown = set(qrels["doc_id"]) - set(pack.documents)
    if unknown:
        raise SystemExit(f"{task.name}: qrels name documents absent from the pack: {sorted(unknown)}")
    listed = set(zip(pack.candidates["query_id"], pack.candidates["doc_id"]))
    missing = sum((q, d) not in listed for q, d in zip(relevant["query_id"], relevant["doc_id"]))
    tied = sum(group["score"].duplicated().any() for _, group in pack.candidates.groupby("query_id"))
    # Score the list order rather than the rounded (partly tied) scores.
    run = pack.candidates.assign(score=DEPTH + 1 - pack.candidates["rank"])[["query_id", "doc_id", "score"]]
    ndcg = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]
    return {
        "task": task.name,
        "type": task.type,
        "queries": len(pack.queries),
        "documents": len(pack.documents),
        "candidates": len(pack.candidates),
        "qrels": len(qrels),
        "relevant": len(relevant),
        "relevant_missing": missing,
        "dropped": ",".join(dropped),
        "tied_queries": tied,
        "first_stage_nDCG@10": round(ndcg, 3),
    }


def main(argv: list[str] | None = None) -> None:
    """Write the packs, task specs and suite; print per-task statistics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tasks", help="task catalogue folder (default: %(default)s)")
    args = parser.parse_args(argv)

    material = load_material()
    (args.out / "mini").mkdir(parents=True, exist_ok=True)
    credits = {name: photo["credit"] for name, photo in material.data["photos"].items()}
    stats = [write_task(task, BUILDERS[task.type](material), credits, args.out) for task in TASKS]

    suite = {
        "suite": "mini",
        "description": (
            "Bundled offline mini benchmark: five small tasks (T→T, T→I, I→T, IT→T, I→I) built "
            "from scikit-image / scikit-learn sample photos and hand-written texts, with a "
            "synthetic first stage. For smoke tests and demos, not for comparing models."
        ),
        "tasks": [task.name for task in TASKS],
    }
    (args.out / "suites").mkdir(parents=True, exist_ok=True)
    (args.out / "suites" / "mini.yaml").write_text(
        yaml.safe_dump(suite, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8"
    )
    print(pd.DataFrame(stats).to_string(index=False))


if __name__ == "__main__":
    main()
