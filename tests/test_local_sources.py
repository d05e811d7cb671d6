"""Local source folders: every layout from Parquet, JSON Lines and save_to_disk folders, MTEB 2.x's own
layout as MTEB writes it, the content digest as revision, and the errors of bad folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

from mrb.errors import MRBError
from mrb.sources import SourceReader, folder_digest
from mrb.tasks import TaskSpec, load_tasks
from tests.hub import write_repo
from tests.test_sources import BLUE, GREEN, JUNK, RED, beir_repo, image, mbeir_repo, mteb_repo, read_all, vidore_repo

Repo = dict[str, dict[str, Dataset]]


def local_task(name: str, type_: str, layout: str, folder: Path, **extra) -> TaskSpec:
    return TaskSpec(name=name, type=type_, instruction="Find it.", source={"layout": layout, "path": str(folder)}, **extra)


def write_plain(folder: Path, repo: Repo, form: str) -> Path:
    """A repo as a plain local folder: ``<config>/<split>.parquet`` ("parquet"), ``.jsonl`` ("jsonl"),
    ``<config>/`` saved with save_to_disk ("saved"), or ``<config>.parquet`` for one-split configs ("files")."""
    for config, splits in repo.items():
        if form == "saved":
            DatasetDict(splits).save_to_disk(str(folder / config))
            continue
        for split, dataset in splits.items():
            if form == "files" and len(splits) == 1:
                folder.mkdir(parents=True, exist_ok=True)
                dataset.to_parquet(folder / f"{config}.parquet")
            elif form == "jsonl":
                (folder / config).mkdir(parents=True, exist_ok=True)
                dataset.to_json(folder / config / f"{split}.jsonl")
            else:
                (folder / config).mkdir(parents=True, exist_ok=True)
                dataset.to_parquet(folder / config / f"{split}.parquet")
    return folder


def error_of(spec: TaskSpec, data_dir: Path, read=lambda r: read_all(r)) -> str:
    with pytest.raises(MRBError) as err:
        read(SourceReader(spec, data_dir))
    return str(err.value)


# ---------------------------------------------------------------- the layouts from local folders


def decodable_mbeir_repo() -> Repo:
    """The M-BEIR repo of test_sources with its undecodable image replaced (your own data may not have one)."""
    repo = mbeir_repo()
    corpus = repo["corpus"]["corpus"]
    repo["corpus"]["corpus"] = corpus.map(
        lambda row: {"image": image(GREEN)} if row["id"] == "9:12" else {}, features=corpus.features
    )
    return repo


LAYOUT_CASES = [
    ("beir", "t2t", beir_repo),
    ("mteb", "it2it", mteb_repo),
    ("mbeir", "t2i", decodable_mbeir_repo),
    ("vidore", "t2vd", vidore_repo),
]


@pytest.mark.parametrize("form", ["parquet", "saved", "files", "readme"])
@pytest.mark.parametrize(("layout", "type_", "repo"), LAYOUT_CASES)
def test_each_layout_reads_from_a_local_folder_as_from_the_hub(tmp_path, layout, type_, repo, form):
    from tests.hub import mirror_repo

    hub_spec = TaskSpec(
        name="T",
        type=type_,
        instruction="Find it.",
        source={"layout": layout, "path": f"org/{layout}", "revision": "0123456789abcdef0123456789abcdef01234567"},
    )
    mirror_repo(tmp_path / "hub-data", hub_spec, repo())
    expected = read_all(SourceReader(hub_spec, tmp_path / "hub-data"))

    folder = tmp_path / "mine"
    if form == "readme":
        write_repo(folder, repo())
    else:
        write_plain(folder, repo(), form)
    reader = SourceReader(local_task("T", type_, layout, folder), tmp_path / "data")
    assert read_all(reader) == expected
    assert reader.provenance() == {
        "layout": layout,
        "path": str(folder),
        "revision": folder_digest(folder),
        "split": "test",
        "local": True,
    }


def test_json_lines_with_image_files_relative_to_the_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "red.png").write_bytes(RED)
    (folder / "images" / "blue.png").write_bytes(BLUE)
    rows = {
        "corpus.jsonl": [{"id": "d1", "image": "images/red.png"}, {"id": "d2", "image": "images/blue.png"}],
        "queries.jsonl": [{"id": 1, "text": "something red"}, {"id": 2, "text": "something blue"}],
        "default.jsonl": [{"query-id": 1, "corpus-id": "d1", "score": 1}, {"query-id": 2, "corpus-id": "d2", "score": 2}],
    }
    for name, lines in rows.items():
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in lines))
    queries, corpus, qrels = read_all(SourceReader(local_task("Photos", "t2i", "mteb2", folder), tmp_path / "data"))
    assert queries == [{"id": "1", "text": "something red", "image": None}, {"id": "2", "text": "something blue", "image": None}]
    assert corpus == [{"id": "d1", "text": None, "image": RED}, {"id": "d2", "text": None, "image": BLUE}]
    assert qrels == [{"query_id": "1", "doc_id": "d1", "relevance": 1}, {"query_id": "2", "doc_id": "d2", "relevance": 2}]


def test_a_relative_source_path_is_read_from_the_task_yaml_folder(tmp_path):
    write_plain(tmp_path / "tasks" / "data", beir_repo(), "parquet")
    (tmp_path / "tasks" / "mine.yaml").write_text("name: Mine\ntype: t2t\ninstruction: x\nsource: {layout: beir, path: data}\n")
    (task,) = load_tasks("Mine", task_dirs=[tmp_path / "tasks"])
    reader = SourceReader(task, tmp_path / "cache")
    assert reader.local == tmp_path / "tasks" / "data" and len(reader.qrels) == 3


def test_the_revision_is_the_content_digest_and_keys_the_arrow_cache(tmp_path):
    folder = write_plain(tmp_path / "mine", beir_repo(), "parquet")
    first = SourceReader(local_task("T", "t2t", "beir", folder), tmp_path / "data")
    assert len(first.qrels) == 3
    assert first._cache_dir == str(tmp_path / "data" / "arrow" / "local" / first.revision[:16])
    Dataset.from_dict({"query-id": ["q1"], "corpus-id": ["d1"], "score": [1]}).to_parquet(folder / "default" / "test.parquet")
    second = SourceReader(local_task("T", "t2t", "beir", folder), tmp_path / "data")
    assert second.revision != first.revision and len(second.qrels) == 1  # never the stale cache of the old content


# ---------------------------------------------------------------- MTEB 2.x's own layout


def mteb2_repo(qrels_config: str = "default") -> Repo:
    """A MIEB-style T→I reranking task as MTEB 2.x lays it out (RetrievalDatasetLoader's names): configs
    corpus (id, text, image as an HF Image), queries (id, text, image), `default` qrels (query-id,
    corpus-id, score) and top_ranked (query-id, corpus-ids)."""
    side = Features({"id": Value("string"), "text": Value("string"), "image": Image()})
    corpus = Dataset.from_dict(
        {"id": ["c1", "c2", "c3"], "text": [None, None, None], "image": [image(RED), image(BLUE), image(GREEN)]}, features=side
    )
    queries = Dataset.from_dict({"id": ["q1", "q2"], "text": ["red", "blue"], "image": [None, None]}, features=side)
    qrels = Dataset.from_dict(
        {"query-id": ["q1", "q2"], "corpus-id": ["c1", "c2"], "score": [1, 1]},
        features=Features({"query-id": Value("string"), "corpus-id": Value("string"), "score": Value("int64")}),
    )
    top_ranked = Dataset.from_dict(
        {"query-id": ["q1", "q2"], "corpus-ids": [["c3", "c1"], ["c2", "c1", "c3"]]},
        features=Features({"query-id": Value("string"), "corpus-ids": Sequence(Value("string"))}),
    )
    return {
        "corpus": {"test": corpus},
        "queries": {"test": queries},
        qrels_config: {"test": qrels},
        "top_ranked": {"test": top_ranked},
    }


@pytest.mark.parametrize("qrels_config", ["default", "qrels"])  # MTEB's loader reads default, else qrels
def test_the_mteb2_layout_as_mteb_writes_it(tmp_path, qrels_config):
    write_repo(tmp_path / "mteb", mteb2_repo(qrels_config))
    reader = SourceReader(local_task("Mieb-T2I", "t2i", "mteb2", tmp_path / "mteb"), tmp_path / "data")
    queries, corpus, qrels = read_all(reader)
    assert queries == [{"id": "q1", "text": "red", "image": None}, {"id": "q2", "text": "blue", "image": None}]
    assert corpus == [
        {"id": "c1", "text": None, "image": RED},
        {"id": "c2", "text": None, "image": BLUE},
        {"id": "c3", "text": None, "image": GREEN},
    ]
    assert qrels == [{"query_id": "q1", "doc_id": "c1", "relevance": 1}, {"query_id": "q2", "doc_id": "c2", "relevance": 1}]
    assert reader.top_ranked().to_dict("list") == {
        "query_id": ["q1", "q1", "q2", "q2", "q2"],
        "doc_id": ["c3", "c1", "c2", "c1", "c3"],
        "row": [1, 1, 2, 2, 2],
        "rank": [1, 2, 1, 2, 3],
    }


def test_mteb2_prefers_a_query_config_and_reads_underscore_ids(tmp_path):
    repo = mteb2_repo()
    repo["query"] = {"test": Dataset.from_dict({"_id": ["q1", "q2"], "text": ["red!", "blue!"]})}
    write_repo(tmp_path / "mteb", repo)
    queries, _, _ = read_all(SourceReader(local_task("Mieb-T2I", "t2i", "mteb2", tmp_path / "mteb"), tmp_path / "data"))
    assert [q["text"] for q in queries] == ["red!", "blue!"]


def test_a_layout_without_first_stage_lists_says_how_to_import_one(tmp_path):
    folder = write_plain(tmp_path / "mine", beir_repo(), "parquet")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text(f"name: Mine\ntype: t2t\ninstruction: x\nsource: {{layout: beir, path: {folder}}}\n")
    (task,) = load_tasks("Mine", task_dirs=[tasks])
    assert error_of(task, tmp_path, lambda r: r.top_ranked()) == (
        "task 'Mine': no first-stage lists come with the source (layout 'beir' has none); "
        f"import a run with `mrb candidates import --tasks Mine --task-dir {tasks} --run FILE`"
    )


# ---------------------------------------------------------------- bad folders


def test_a_missing_folder_names_the_yaml(tmp_path):
    (tmp_path / "t.yaml").write_text("name: Mine\ntype: t2t\ninstruction: x\nsource: {layout: mteb2, path: ../nowhere}\n")
    (task,) = load_tasks("Mine", task_dirs=[tmp_path])
    with pytest.raises(MRBError) as err:
        SourceReader(task, tmp_path)
    assert str(err.value) == (
        f"task 'Mine': the source folder {tmp_path}/../nowhere does not exist (source path '../nowhere' in {tmp_path}/t.yaml)"
    )


def test_a_missing_config_and_a_missing_split_are_named(tmp_path):
    repo = beir_repo()
    del repo["default"]
    folder = write_plain(tmp_path / "mine", repo, "parquet")
    assert error_of(local_task("T", "t2t", "beir", folder), tmp_path) == (
        f"task 'T': {folder} has no config 'default' (a folder or a .parquet or .jsonl file of that name) for the qrels "
        "(layout 'beir' expects it; the dataset has corpus, queries)"
    )
    folder = write_plain(tmp_path / "other", beir_repo(), "parquet")
    spec = TaskSpec(name="T", type="t2t", instruction="x", source={"layout": "beir", "path": str(folder), "split": "dev"})
    assert error_of(spec, tmp_path) == f"task 'T': config 'default' of {folder} has no split 'dev' (it has train, test)"


def test_a_missing_column_names_the_folder_the_file_and_the_column(tmp_path):
    folder = write_plain(tmp_path / "mine", beir_repo(), "files")
    shutil.rmtree(folder / "default")
    write_plain(folder, {"default": {"test": beir_repo()["default"]["test"]}}, "files")
    assert error_of(local_task("T", "t2i", "beir", folder), tmp_path) == (
        f"task 'T': the corpus of {folder} (config 'corpus': corpus.parquet) lack column(s) image needed for a T→I task "
        "(columns: _id, title, text)"
    )


@pytest.mark.parametrize(
    ("config", "data", "message"),
    [
        (
            "queries",
            {"_id": ["q1", "q2", "q3"], "text": [["a"], ["b"], ["c"]]},
            "column 'text' of the queries of {folder} (config 'queries': queries/queries.parquet) holds list<item: string>, not text (string)",
        ),
        (
            "default",
            {"query-id": ["q1"], "corpus-id": ["d1"], "score": ["relevant"]},
            "column 'score' of the qrels of {folder} (config 'default': default/test.parquet) holds string, "
            "not relevance grades (numbers)",
        ),
        (
            "corpus",
            {"_id": [1.5, 2.5, 3.5], "title": ["", "", ""], "text": ["a", "b", "c"]},
            "column '_id' of the corpus of {folder} (config 'corpus': corpus/corpus.parquet) holds double, not ids (string or integer)",
        ),
        (
            "corpus",
            {"_id": ["d1", "d2", "d1"], "title": ["", "", ""], "text": ["a", "b", "c"]},
            "the corpus of {folder} repeat id 'd1'",
        ),
    ],
)
def test_columns_of_the_wrong_type_and_repeated_ids_are_errors(tmp_path, config, data, message):
    repo = beir_repo()
    repo[config] = {next(iter(repo[config])): Dataset.from_dict(data)}
    folder = write_plain(tmp_path / "mine", repo, "parquet")
    assert error_of(local_task("T", "t2t", "beir", folder), tmp_path) == "task 'T': " + message.format(folder=folder)


def jsonl_folder(folder: Path, files: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("images/broken.jpg", "of {folder}: image file 'images/broken.jpg' does not decode"),
        ("images/absent.jpg", "names image 'images/absent.jpg', which {folder} lacks"),
        ("../outside.jpg", "names image '../outside.jpg', outside the source folder {folder}"),
    ],
)
def test_an_image_file_that_does_not_decode_is_missing_or_outside_the_folder_is_named(tmp_path, name, problem):
    folder = jsonl_folder(
        tmp_path / "mine",
        {
            "corpus.jsonl": [{"id": "d1", "image": "images/red.png"}, {"id": "d2", "image": name}],
            "queries.jsonl": [{"id": "q1", "text": "red"}],
            "default.jsonl": [{"query-id": "q1", "corpus-id": "d1", "score": 1}],
        },
    )
    (folder / "images").mkdir()
    (folder / "images" / "red.png").write_bytes(RED)
    (folder / "images" / "broken.jpg").write_bytes(JUNK)
    (tmp_path / "outside.jpg").write_bytes(RED)
    folder = folder.resolve()
    assert error_of(local_task("T", "t2i", "mteb2", folder), tmp_path) == "task 'T': document 'd2' " + problem.format(
        folder=folder
    )


def test_an_embedded_image_that_does_not_decode_names_the_document_and_the_file(tmp_path):
    folder = write_plain(tmp_path / "mine", mbeir_repo(), "parquet")  # document 9:12 holds bytes that are no image
    assert error_of(local_task("T", "t2i", "mbeir", folder), tmp_path) == (
        f"task 'T': document '9:12' of {folder}: the image in config 'corpus': corpus/corpus.parquet does not decode"
    )  # from the hub the same document is dropped and counted (test_sources)


def test_record_passes_keep_their_batch_size_across_the_arrow_files(tmp_path):
    corpus = Dataset.from_dict({"_id": [f"d{i}" for i in range(7)], "title": [""] * 7, "text": [f"text {i}" for i in range(7)]})
    repo = beir_repo()
    repo["default"] = {"test": Dataset.from_dict({"query-id": ["q1"], "corpus-id": ["d3"], "score": [1]})}
    write_plain(tmp_path / "mine", {k: v for k, v in repo.items() if k != "corpus"}, "parquet")
    corpus.save_to_disk(str(tmp_path / "mine" / "corpus"), num_shards=3)  # three Arrow files of 3, 2 and 2 rows
    reader = SourceReader(local_task("T", "t2t", "beir", tmp_path / "mine"), tmp_path / "data")
    batches = list(reader.corpus(batch_size=2))
    assert [b.num_rows for b in batches] == [2, 2, 2, 1]
    assert [row["id"] for b in batches for row in b.to_pylist()] == [f"d{i}" for i in range(7)]
