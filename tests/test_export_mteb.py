"""Packs and results other tools read: `mrb candidates export --format mteb` writes an MTEB 2.x reranking
dataset, and the MTEB results export names MRB's tasks MRB-<task> with their source's revision. With the
`interop` extra (mteb) installed, MTEB itself loads and scores both; without it, the files are checked
against the layout MTEB's loader reads and the fields of its TaskResult."""

from __future__ import annotations

import json

import datasets
import mteb  # the test extra installs it (users get it with the `interop` extra)
import numpy as np
import pytest
from datasets import Features, Sequence, Value

import mrb
from mrb.cli import main
from mrb.data import read_pack
from mrb.sources import folder_digest
from tests.test_given import lists, own_task, tie_free


@pytest.fixture(params=[False, True], ids=["t2t", "t2i"])
def exported(request, tmp_path):
    """Own-T2T (or Own-T2I, with images) built from its top_ranked lists and exported for MTEB."""
    name = "Own-T2I" if request.param else "Own-T2T"
    tasks = own_task(tmp_path, name, images=request.param)
    where = ["--tasks", name, "--task-dir", str(tasks), "--data-dir", str(tmp_path / "data")]
    assert main(["candidates", "build", *where]) == 0
    assert main(["candidates", "export", *where, "--format", "mteb", str(tmp_path / "out")]) == 0
    return name, tasks, tmp_path / "data" / "packs" / name, tmp_path / "out" / name


def test_the_export_has_the_layout_mteb_reads(exported):
    name, _, pack_dir, folder = exported
    # what MTEB's RetrievalDatasetLoader asks `datasets` for, config by config
    assert datasets.get_dataset_config_names(str(folder)) == ["corpus", "queries", "default", "top_ranked"]
    load = {c: datasets.load_dataset(str(folder), c, split="test") for c in ("corpus", "queries", "default", "top_ranked")}
    pack = read_pack(pack_dir)
    image = name.endswith("I")
    assert load["corpus"].features == Features(
        {"id": Value("string"), **({"image": datasets.Image()} if image else {"text": Value("string")})}
    )
    assert load["corpus"]["id"] == list(pack.documents)
    assert load["queries"].features == Features({"id": Value("string"), "text": Value("string")})
    qrels = load["default"].cast(Features({"query-id": Value("string"), "corpus-id": Value("string"), "score": Value("int32")}))
    assert sorted(zip(qrels["query-id"], qrels["corpus-id"], qrels["score"])) == sorted(
        pack.qrels.itertuples(index=False, name=None)
    )
    top = load["top_ranked"].cast(Features({"query-id": Value("string"), "corpus-ids": Sequence(Value("string"))}))
    assert dict(zip(top["query-id"], top["corpus-ids"])) == {q: docs[:8] for q, docs in lists().items()}
    if image:
        assert load["corpus"].with_format("arrow")["image"][0]["bytes"].as_py() == pack.documents["d00"].encoded_image()


def test_the_export_reads_back_as_an_mteb2_source_with_the_same_lists(exported, tmp_path):
    name, tasks, pack_dir, folder = exported
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "again.yaml").write_text(
        (tasks / f"{name}.yaml").read_text().replace(f"name: {name}", "name: Again").replace("path: data", f"path: {folder}")
    )
    assert (
        main(
            [
                "candidates",
                "build",
                "--tasks",
                "Again",
                "--task-dir",
                str(tmp_path / "again"),
                "--data-dir",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    first, again = read_pack(pack_dir), read_pack(tmp_path / "data" / "packs" / "Again")
    assert again.candidates.equals(first.candidates)

    def contents(records):
        return {rid: (r.text, r.encoded_image()) for rid, r in records.items()}

    assert contents(again.queries) == contents(first.queries) and contents(again.documents) == contents(first.documents)
    assert (
        again.qrels.sort_values(["query_id", "doc_id"]).values.tolist()
        == first.qrels.sort_values(["query_id", "doc_id"]).values.tolist()
    )


def test_mteb_loads_the_export_and_scores_it_as_mrb_does(exported, tmp_path):
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models.model_meta import ModelMeta

    name, tasks, _, folder = exported
    image = name.endswith("I")

    class Exported(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=f"MRB-{name}",
            description="An MRB pack exported for MTEB.",
            reference=None,
            dataset={"path": str(folder), "revision": "local"},
            type="Any2AnyRetrieval" if image else "Reranking",
            category="t2i" if image else "t2t",
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            modalities=["text", "image"] if image else ["text"],
            sample_creation=None,
            bibtex_citation="",
        )

    class TieFree:
        """The tie-free scorer of test_given as an MTEB cross-encoder (it scores by ids)."""

        mteb_model_meta = ModelMeta(
            loader=None,
            name="mrb/tie-free",
            revision="1",
            release_date=None,
            languages=None,
            n_parameters=None,
            memory_usage_mb=None,
            max_tokens=None,
            embed_dim=None,
            license=None,
            open_weights=None,
            public_training_code=None,
            public_training_data=None,
            framework=[],
            similarity_fn_name=None,
            use_instructions=None,
            training_datasets=None,
            model_type=["cross-encoder"],
            modalities=["text", "image"] if image else ["text"],
        )

        def predict(self, inputs1, inputs2, **kwargs):
            pairs = [(q, d) for a, b in zip(inputs1, inputs2) for q, d in zip(a["id"], b["id"])]
            return np.array(tie_free([mrb.Pair("", mrb.Record(q), mrb.Record(d)) for q, d in pairs]))

    scores = mteb.evaluate(TieFree(), Exported(), cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
    ours = mrb.evaluate(tie_free, name, task_dirs=[tasks], data_dir=tmp_path / "data", quiet=True).iloc[0]
    # q5, judged but without a relevant document, counts 0 in both (MRB's default `no_relevant: zero`)
    assert ours["n_no_relevant"] == 1
    assert scores["ndcg_at_10"] == pytest.approx(ours["value"], abs=1e-5)  # MTEB rounds to 5 decimals
    assert scores["mrr_at_10"] == pytest.approx(ours["RR@10"], abs=1e-5)


def check_task_result(data: dict) -> None:
    """The fields and types of MTEB's TaskResult (mteb/results/task_result.py) and of its scores dicts."""
    assert isinstance(data["dataset_revision"], str) and isinstance(data["task_name"], str)
    assert isinstance(data["mteb_version"], str) and data["mteb_version"][0].isdigit()
    assert isinstance(data["evaluation_time"], float) and data["kg_co2_emissions"] is None
    for split, entries in data["scores"].items():
        assert isinstance(split, str) and isinstance(entries, list)
        for entry in entries:
            assert isinstance(entry["main_score"], float) and isinstance(entry["hf_subset"], str)
            assert isinstance(entry["languages"], list) and all(isinstance(lang, str) for lang in entry["languages"])
    json.dumps(data)


def test_the_results_export_names_the_task_and_the_source_revision(tmp_path, capsys):
    tasks = own_task(tmp_path)
    run = [
        "run",
        "--model",
        "first-stage",
        "--tasks",
        "Own-T2T",
        "--task-dir",
        str(tasks),
        "--data-dir",
        str(tmp_path / "data"),
        "--output",
        str(tmp_path / "results"),
        "--quiet",
        "--build-missing",
    ]
    assert main(run) == 0
    assert main(["report", "--results", str(tmp_path / "results"), "--export-mteb", str(tmp_path / "mteb"), "--no-reported"]) == 0
    capsys.readouterr()
    path = tmp_path / "mteb" / "first-stage" / "no_revision_available" / "MRB-Own-T2T.json"
    data = json.loads(path.read_text())
    check_task_result(data)
    board = mrb.evaluate("first-stage", "Own-T2T", task_dirs=[tasks], data_dir=tmp_path / "data", quiet=True).iloc[0]
    assert (data["task_name"], data["dataset_revision"], data["mteb_version"]) == (
        "MRB-Own-T2T",
        folder_digest(tasks / "data"),
        "2.26.24",
    )
    assert data["scores"]["test"][0]["main_score"] == board["value"] and data["mrb_pack_hash"] == board["pack_hash"]
    loaded = mteb.TaskResult.from_disk(path)
    assert (loaded.task_name, loaded.dataset_revision, loaded.get_score()) == (
        "MRB-Own-T2T",
        data["dataset_revision"],
        board["value"],
    )
