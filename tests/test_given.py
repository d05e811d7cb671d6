"""Given first stages: a source's own top_ranked lists and imported run files become packs that score exactly
as the same lists written with write_pack; every malformed or inconsistent run is one error, nothing written."""

from __future__ import annotations

import hashlib
import io
import math
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset, Features, Image, Sequence, Value
from PIL import Image as PILImage

import mrb
from mrb.candidates import build_candidates, commands, import_run
from mrb.cli import main
from mrb.data import Record, read_pack
from mrb.errors import MRBError
from mrb.tasks import load_tasks
from tests.hub import write_repo
from tests.packs import candidate_lists, write_task

N_QUERIES, N_DOCS, LISTED = 6, 24, 10


def colour(i: int) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (4, 3), (10 * i, 255 - 10 * i, 7 * i)).save(buf, "PNG")
    return buf.getvalue()


def lists() -> dict[str, list[str]]:
    """Each query's first-stage list: LISTED documents in a fixed shuffled order."""
    rng = np.random.default_rng(7)
    return {f"q{q}": [f"d{d:02d}" for d in rng.permutation(N_DOCS)[:LISTED]] for q in range(N_QUERIES)}


def qrels() -> list[tuple[str, str, int]]:
    """Graded judgements: for q, d(3q) is relevant 2, d(3q+1) and d(3q+2) relevant 1, d(3q+3) judged 0;
    q5 has no relevant document at all (set aside by the metrics)."""
    rows = []
    for q in range(N_QUERIES - 1):
        rows += [
            (f"q{q}", f"d{3 * q:02d}", 2),
            (f"q{q}", f"d{3 * q + 1:02d}", 1),
            (f"q{q}", f"d{3 * q + 2:02d}", 1),
            (f"q{q}", f"d{3 * q + 3:02d}", 0),
        ]
    return [*rows, (f"q{N_QUERIES - 1}", "d23", 0)]


def mteb2_repo(images: bool) -> dict[str, dict[str, Dataset]]:
    """The data as MTEB 2.x lays out a reranking task (RetrievalDatasetLoader's config and column names):
    corpus (id, title, text or an HF Image), queries (id, text), default qrels (query-id, corpus-id,
    score) and top_ranked (query-id, corpus-ids)."""
    docs = {"id": [f"d{i:02d}" for i in range(N_DOCS)]}
    if images:
        docs["image"] = [{"bytes": colour(i), "path": None} for i in range(N_DOCS)]
        corpus = Dataset.from_dict(docs, features=Features({"id": Value("string"), "image": Image()}))
    else:
        docs.update(title=[f"Doc {i}" for i in range(N_DOCS)], text=[f"passage number {i}" for i in range(N_DOCS)])
        corpus = Dataset.from_dict(docs)
    queries = Dataset.from_dict({"id": [f"q{q}" for q in range(N_QUERIES)], "text": [f"question {q}" for q in range(N_QUERIES)]})
    judged = Dataset.from_dict(
        {k: list(v) for k, v in zip(("query-id", "corpus-id", "score"), zip(*qrels()))},
        features=Features({"query-id": Value("string"), "corpus-id": Value("string"), "score": Value("int32")}),
    )
    top = Dataset.from_dict(
        {"query-id": list(lists()), "corpus-ids": list(lists().values())},
        features=Features({"query-id": Value("string"), "corpus-ids": Sequence(Value("string"))}),
    )
    return {"corpus": {"test": corpus}, "queries": {"test": queries}, "default": {"test": judged}, "top_ranked": {"test": top}}


def own_task(root: Path, name: str = "Own-T2T", *, images: bool = False, first_stage: str = "given", extra: str = "") -> Path:
    """A task folder `root/tasks` with `name`.yaml over an MTEB-2-layout folder `root/tasks/data`."""
    tasks = root / "tasks"
    write_repo(tasks / "data", mteb2_repo(images))
    type_ = "t2i" if images else "t2t"
    (tasks / f"{name}.yaml").write_text(
        f"name: {name}\ntype: {type_}\ninstruction: Find it.\ndepth: 8\nfirst_stage: {first_stage}\n"
        f"source: {{layout: mteb2, path: data}}\n{extra}"
    )
    return tasks


def tie_free(pairs) -> list[float]:
    """A scorer with no ties: a hash of (query id, doc id)."""
    return [int.from_bytes(hashlib.sha256(f"{p.query.id}|{p.document.id}".encode()).digest()[:8], "big") / 2**64 for p in pairs]


def per_query(results: Path, task: str, model: str = "tie_free") -> dict[str, tuple[float, float]]:
    frame = pd.read_parquet(results / model / f"{task}.parquet")
    return {q: (v, f) for q, v, f in frame[["query_id", "value", "first_stage_value"]].itertuples(index=False)}


def ndcg10(ranked: list[str], judged: dict[str, int]) -> float:
    """nDCG@10 by hand: gain = grade, log2 discount, ideal over every judged document."""
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(judged.values(), reverse=True)[:10]))
    return dcg / ideal if ideal else 0.0


# ---------------------------------------------------------------- given lists and imported runs


@pytest.fixture
def given(tmp_path):
    """The Own-T2T pack built from the source's top_ranked lists through the CLI."""
    tasks = own_task(tmp_path)
    argv = ["candidates", "build", "--tasks", "Own-T2T", "--task-dir", str(tasks), "--data-dir", str(tmp_path / "data")]
    assert main(argv) == 0
    return tasks, tmp_path / "data" / "packs" / "Own-T2T"


def test_given_lists_become_a_pack_that_records_where_they_came_from(given, capsys):
    tasks, folder = given
    pack = read_pack(folder)
    depth8 = {q: docs[:8] for q, docs in lists().items() if q != "q5"}  # q5 has qrels but no relevant document
    assert candidate_lists(pack) == {**depth8, "q5": lists()["q5"][:8]}
    assert pack.candidates.query("query_id == 'q0'")["score"].tolist() == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert pack.queries["q0"] == Record("q0", "question 0")
    assert pack.documents["d00"] == Record("d00", "Doc 0 passage number 0")
    assert pack.manifest["retriever"] == {
        "name": "given",
        "lists": f"top_ranked of {tasks}/data",
        "ties_broken_by_doc_id": 0,
        "cut_below_depth": 12,
        "lists_of_queries_without_qrels_dropped": 0,
        "judged_queries_without_a_list": 0,
    }
    assert (
        pack.manifest["source"]["revision"]
        == hashlib.sha256(
            b"".join(
                f"{p.relative_to(tasks / 'data').as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode()
                for p in sorted((tasks / "data").rglob("*"))
                if p.is_file()
            )
        ).hexdigest()
    )
    assert pack.manifest["counts"] == {
        "queries": 6,
        "documents": len(set(pack.candidates["doc_id"])),
        "candidates": 48,
        "qrels": 21,
    }
    assert (
        main(["candidates", "stats", "--tasks", "Own-T2T", "--task-dir", str(tasks), "--data-dir", str(folder.parent.parent)])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[-1].split()[:6] == ["Own-T2T", "given", "8", "6", "48", "nDCG@10"]


def test_given_and_imported_packs_score_exactly_as_the_same_lists_written_with_write_pack(given, tmp_path):
    tasks, folder = given
    depth8 = {q: docs[:8] for q, docs in lists().items()}
    run = tmp_path / "run.trec"
    run.write_text("".join(f"{q} Q0 {d} {r} {10 - r}.5 mine\n" for q, docs in depth8.items() for r, d in enumerate(docs, 1)))
    imported = import_run(load_tasks("Own-T2T", task_dirs=[tasks])[0], run, out=tmp_path / "imported")
    by_hand = tmp_path / "hand"
    pack = read_pack(folder)
    write_task(
        by_hand,
        "Hand-T2T",
        queries=list(pack.queries.values()),
        documents=list(pack.documents.values()),
        candidates=[(q, d, r, float(10 - r)) for q, docs in depth8.items() for r, d in enumerate(docs, 1)],
        qrels=qrels(),
    )
    (tmp_path / "imported.yaml").write_text(
        "name: Imported-T2T\ntype: t2t\ninstruction: Find it.\ndepth: 8\npack: imported/Own-T2T\n"
    )
    boards = {
        "given": mrb.evaluate(
            tie_free, "Own-T2T", task_dirs=[tasks], data_dir=tmp_path / "data", output_dir=tmp_path / "r1", quiet=True
        ),
        "imported": mrb.evaluate(tie_free, "Imported-T2T", task_dirs=[tmp_path], output_dir=tmp_path / "r2", quiet=True),
        "by hand": mrb.evaluate(tie_free, "Hand-T2T", task_dirs=[by_hand], output_dir=tmp_path / "r3", quiet=True),
    }
    values = {
        name: board[["value", "first_stage_value", "RR@10", "first_stage_R@100"]].values.tolist()
        for name, board in boards.items()
    }
    assert values["given"] == values["imported"] == values["by hand"]
    assert (
        per_query(tmp_path / "r1", "Own-T2T")
        == per_query(tmp_path / "r2", "Imported-T2T")
        == per_query(tmp_path / "r3", "Hand-T2T")
    )
    assert read_pack(imported.pack).manifest["first_stage"] == pack.manifest["first_stage"]


@pytest.mark.parametrize("images", [False, True])
def test_an_mteb2_folder_gives_the_per_query_ndcg_computed_independently(tmp_path, images):
    name = "Own-T2I" if images else "Own-T2T"
    tasks = own_task(tmp_path, name, images=images)
    assert (
        main(
            [
                "run",
                "--model",
                "first-stage",
                "--tasks",
                name,
                "--task-dir",
                str(tasks),
                "--data-dir",
                str(tmp_path / "data"),
                "--output",
                str(tmp_path / "fs"),
                "--quiet",
                "--build-missing",
            ]
        )
        == 0
    )
    board = mrb.evaluate(tie_free, name, task_dirs=[tasks], data_dir=tmp_path / "data", output_dir=tmp_path / "r", quiet=True)
    judged: dict[str, dict[str, int]] = {}
    for q, d, g in qrels():
        judged.setdefault(q, {})[d] = g
    score = lambda q, d: tie_free([mrb.Pair("", Record(q), Record(d))])[0]  # noqa: E731
    expected = {}
    for q, docs in lists().items():
        reranked = sorted(docs[:8], key=lambda d: -score(q, d))
        expected[q] = (ndcg10(reranked, judged[q]), ndcg10(docs[:8], judged[q]))  # q5, without a relevant document: 0
    got = per_query(tmp_path / "r", name)
    assert got.keys() == expected.keys()
    for q, (value, first) in expected.items():
        assert got[q] == (pytest.approx(value, abs=1e-12), pytest.approx(first, abs=1e-12)), q
    assert board["value"].iloc[0] == pytest.approx(np.mean([v for v, _ in expected.values()]), abs=1e-12)


def test_runs_without_ranks_are_ordered_by_score_then_doc_id_and_cut_to_the_depth(tmp_path):
    tasks = own_task(tmp_path)
    (task,) = load_tasks("Own-T2T", task_dirs=[tasks])
    rows = [("q0", "d09", 0.5), ("q0", "d03", 0.9), ("q0", "d01", 0.5), ("q0", "d00", 0.7), ("q1", "d04", 1.0)]
    rows += [("q1", f"d{i:02d}", 0.1) for i in range(10, 20)]
    pd.DataFrame(rows, columns=["query_id", "doc_id", "score"]).to_csv(tmp_path / "run.csv", index=False)
    pd.DataFrame(rows, columns=["query_id", "doc_id", "score"]).to_parquet(tmp_path / "run.parquet")
    for name in ("run.csv", "run.parquet"):
        result = import_run(task, tmp_path / name, out=tmp_path / name.replace(".", "-"))
        pack = read_pack(result.pack)
        assert candidate_lists(pack)["q0"] == ["d03", "d00", "d01", "d09"]
        assert candidate_lists(pack)["q1"] == ["d04", *[f"d{i:02d}" for i in range(10, 17)]]
        retriever = pack.manifest["retriever"]
        assert (retriever["name"], retriever["format"], retriever["ties_broken_by_doc_id"], retriever["cut_below_depth"]) == (
            "imported",
            name.split(".")[1],
            10,
            3,
        )  # d01 ties d09, and nine of q1's ten 0.1s tie an earlier one
        assert (
            retriever["judged_queries_without_a_list"] == 4
            and retriever["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        )
        assert set(pack.queries) == {f"q{q}" for q in range(N_QUERIES)}  # judged queries without a list count 0


# ---------------------------------------------------------------- bad runs: one error each, nothing written

TREC_OK = "q0 Q0 d00 1 3.0 t\nq0 Q0 d01 2 2.0 t\n"


@pytest.mark.parametrize(
    ("run", "problem"),
    [
        (
            TREC_OK + "q1 Q0 d02 1 3.0\n",
            "run file {run}, line 3: expected `query_id Q0 doc_id rank score tag` (6 fields), got 5: 'q1 Q0 d02 1 3.0'",
        ),
        (TREC_OK + "q1 Q0 d02 first 3.0 t\n", "run file {run}, line 3: rank 'first' is not a whole number"),
        (TREC_OK + "\nq1 Q0 d02 1 high t\n", "run file {run}, line 4: score 'high' is not a number"),
        ("", "run file {run} holds no entries (expected lines `query_id Q0 doc_id rank score tag`)"),
        (TREC_OK + "q9 Q0 d02 1 3.0 t\n", "task 'Own-T2T': run file {run}, line 3: query 'q9' is not in the queries of {data}"),
        (
            TREC_OK + "q1 Q0 d99 1 3.0 t\n",
            "task 'Own-T2T': run file {run}, line 3: document 'd99' is not in the corpus of {data}",
        ),
        (
            TREC_OK + "q0 Q0 d00 3 1.0 t\n",
            "task 'Own-T2T': run file {run}, line 3: lists query 'q0''s document 'd00' twice (also line 1)",
        ),
        (
            TREC_OK + "q0 Q0 d02 2 1.0 t\n",
            "task 'Own-T2T': run file {run}, line 3: ranks two documents of query 'q0' at 2 (also line 2)",
        ),
        (
            TREC_OK + "q0 Q0 d02 3 2.5 t\n",
            "task 'Own-T2T': run file {run}, line 3: query 'q0' ranks document 'd02' at 3 with score 2.5, "
            "above the score 2 of 'd01' at 2 (line 2): ranks and scores disagree",
        ),
    ],
)
def test_a_bad_run_is_one_error_and_writes_nothing(tmp_path, capsys, run, problem):
    tasks = own_task(tmp_path)
    path = tmp_path / "run.trec"
    path.write_text(run)
    argv = [
        "candidates",
        "import",
        "--tasks",
        "Own-T2T",
        "--task-dir",
        str(tasks),
        "--run",
        str(path),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "mrb: error: " + problem.format(run=path, data=tasks / "data")
    assert not (tmp_path / "data" / "packs").exists()


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (
            pd.DataFrame({"query_id": ["q0"], "doc": ["d00"], "score": [1.0]}),
            "run file {run} lacks column(s) doc_id (has query_id, doc, score; expected query_id, doc_id, score and optionally rank)",
        ),
        (
            pd.DataFrame({"query_id": ["q0", "q0"], "doc_id": ["d00", "d01"], "score": ["1.0", "much"]}),
            "run file {run}, line 3: score 'much' is not a number",
        ),
        (
            pd.DataFrame({"query_id": ["q0", "q0"], "doc_id": ["d00", "d01"], "score": [1.0, 0.5], "rank": [1, 1.5]}),
            "run file {run}, line 3: rank 1.5 is not a whole number",
        ),
    ],
)
def test_a_bad_table_run_names_the_column_or_line(tmp_path, capsys, frame, problem):
    tasks = own_task(tmp_path)
    path = tmp_path / "run.csv"
    frame.to_csv(path, index=False)
    capsys.readouterr()
    assert main(["candidates", "import", "--tasks", "Own-T2T", "--task-dir", str(tasks), "--run", str(path)]) == 2
    assert capsys.readouterr().err == "mrb: error: " + problem.format(run=path) + "\n"


def test_a_listed_query_the_source_lacks_and_a_layout_without_lists(tmp_path):
    tasks = own_task(tmp_path)
    repo = mteb2_repo(False)
    repo["top_ranked"]["test"] = Dataset.from_dict({"query-id": ["q0", "q7"], "corpus-ids": [["d00"], ["d01"]]})
    write_repo(tasks / "data", repo)
    with pytest.raises(MRBError) as err:
        build_candidates(load_tasks("Own-T2T", task_dirs=[tasks]), data_dir=tmp_path / "data")
    assert (
        str(err.value) == f"task 'Own-T2T': top_ranked of {tasks}/data, row 2: query 'q7' is not in the queries of {tasks}/data"
    )


def test_a_judged_query_the_reader_drops_is_neither_listed_nor_judged_in_the_pack(tmp_path):
    """A judged query without text is dropped by the reader (counted), as a build drops it: the pack reads back."""
    tasks = own_task(tmp_path)
    repo = mteb2_repo(False)
    texts = [f"question {q}" for q in range(N_QUERIES)]
    texts[1] = "  "
    repo["queries"]["test"] = Dataset.from_dict({"id": [f"q{q}" for q in range(N_QUERIES)], "text": texts})
    write_repo(tasks / "data", repo)
    [result] = build_candidates(load_tasks("Own-T2T", task_dirs=[tasks]), data_dir=tmp_path / "data")
    pack = read_pack(result.pack)
    assert "q1" not in pack.queries and "q1" not in set(pack.candidates["query_id"]) | set(pack.qrels["query_id"])
    assert pack.manifest["source_report"] == {"queries without text (dropped)": 1}
    assert pack.manifest["counts"]["queries"] == 5


def test_write_pack_refuses_qrels_of_a_query_it_did_not_write(tmp_path):
    from mrb.data import write_pack

    qrels = pd.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["d1", "d1"], "relevance": [1, 1]})
    candidates = pd.DataFrame({"query_id": ["q1"], "doc_id": ["d1"], "rank": [1], "score": [1.0]})
    with pytest.raises(MRBError) as err:
        write_pack(
            tmp_path / "P",
            queries=[Record("q1", "x")],
            documents=[Record("d1", "y")],
            candidates=candidates,
            qrels=qrels,
            manifest={},
        )
    assert str(err.value) == f"cannot write pack {tmp_path / 'P'}: qrels name query 'q2', which queries.parquet lacks"
    assert not (tmp_path / "P").exists()


# ---------------------------------------------------------------- hints that run as printed; checks before weights


def test_the_missing_pack_hint_runs_as_printed(tmp_path, capsys):
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
    ]
    assert main(run) == 2
    err = capsys.readouterr().err
    command = err.split("`")[1]
    assert command == f"mrb candidates build --tasks Own-T2T --task-dir {tasks} --retriever given --data-dir {tmp_path}/data"
    assert main(shlex.split(command)[1:]) == 0
    assert main(run) == 0


def test_a_layout_problem_is_reported_before_any_weights_load(tmp_path, monkeypatch):
    tasks = own_task(tmp_path, first_stage="minilm")
    (tasks / "data" / "README.md").unlink()  # now a plain folder of config folders, and without qrels:
    shutil.rmtree(tasks / "data" / "default")
    monkeypatch.setattr(commands, "get_encoder", lambda *a, **k: pytest.fail("weights loaded before the source was checked"))
    with pytest.raises(MRBError) as err:
        build_candidates(load_tasks("Own-T2T", task_dirs=[tasks]), data_dir=tmp_path / "data")
    assert str(err.value).startswith(f"task 'Own-T2T': {tasks}/data has no config 'default' or 'qrels'")


def test_an_id_a_pack_cannot_hold_is_reported_before_any_weights_load(tmp_path, monkeypatch):
    tasks = own_task(tmp_path, first_stage="minilm")
    repo = mteb2_repo(False)
    corpus = repo["corpus"]["test"].to_dict()
    corpus["id"][3] = "d 03"
    repo["corpus"]["test"] = Dataset.from_dict(corpus)
    write_repo(tasks / "data", repo)
    monkeypatch.setattr(commands, "get_encoder", lambda *a, **k: pytest.fail("weights loaded before the ids were checked"))
    with pytest.raises(MRBError) as err:
        build_candidates(load_tasks("Own-T2T", task_dirs=[tasks]), data_dir=tmp_path / "data")
    assert str(err.value) == (
        f"task 'Own-T2T': the corpus of {tasks}/data: id 'd 03' cannot be written to a TREC run file or an MTEB dataset "
        "(ids must be non-empty, printable and free of whitespace)"
    )


def test_a_listed_image_that_does_not_decode_is_named_and_nothing_is_written(tmp_path):
    tasks = own_task(tmp_path, "Own-T2I", images=True)
    repo = mteb2_repo(True)
    corpus = repo["corpus"]["test"]
    repo["corpus"]["test"] = corpus.map(
        lambda row: {"image": {"bytes": b"not an image", "path": None}} if row["id"] == "d07" else {}, features=corpus.features
    )
    write_repo(tasks / "data", repo)
    with pytest.raises(MRBError) as err:
        build_candidates(load_tasks("Own-T2I", task_dirs=[tasks]), data_dir=tmp_path / "data")
    assert str(err.value) == (
        f"task 'Own-T2I': document 'd07' of {tasks}/data: the image in config 'corpus': corpus/test-00000-of-00001.parquet does not decode"
    )
    assert list((tmp_path / "data" / "packs").iterdir()) == []  # found while the pack was written: its staging is gone
