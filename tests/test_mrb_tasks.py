"""The 40-task MRB catalogue, the source/parts schema, composite scoring and pack lookup."""

import runpy
from collections import Counter
from pathlib import Path

import pytest

from mrb.errors import MRBError
from mrb.tasks import bundled_tasks_dir, load_task_file, load_tasks, resolve_data_dir

ROOT = Path(__file__).resolve().parent.parent
REV = "0123456789abcdef0123456789abcdef01234567"


def test_suite_mrb_has_the_papers_per_type_counts():
    tasks = load_tasks("mrb")
    assert len(tasks) == 40
    assert Counter(t.type.label for t in tasks) == {
        "T→T": 14, "I→I": 1, "T→I": 4, "T→VD": 5, "I→T": 4, "T→IT": 2, "IT→T": 5, "IT→I": 2, "IT→IT": 3,
    }  # fmt: skip


def test_every_mrb_yaml_validates_with_a_pinned_source():
    files = sorted((bundled_tasks_dir() / "mrb").glob("*.yaml"))
    tasks = [load_task_file(path) for path in files]
    assert {t.name for t in tasks} == {t.name for t in load_tasks("mrb")}
    for task in tasks:
        assert (task.metric, task.depth, task.first_stage) == ("nDCG@10", 100, "gme-qwen2-vl-2b"), task.name
        assert task.sizes is not None and task.pack is None, task.name
        for unit in task.units():
            assert len(unit.source.revision) == 40, unit.name
    assert sorted(t.name for t in tasks if t.ignore_identical_ids) == ["ArguAna", "FiQA2018", "MSMARCO"]
    assert Counter(u.source.layout for t in tasks for u in t.units()) == {"beir": 23, "mbeir": 21, "vidore": 5, "mteb": 2}


def test_cqadupstack_is_one_task_of_twelve_parts():
    (cqa,) = load_tasks("CQADupStack")
    units = cqa.units()
    assert [u.name for u in units] == [
        f"CQADupStack-{forum}"
        for forum in [
            "android",
            "english",
            "gaming",
            "gis",
            "mathematica",
            "physics",
            "programmers",
            "stats",
            "tex",
            "unix",
            "webmasters",
            "wordpress",
        ]
    ]
    assert {(u.composite, u.type.value, u.instruction) for u in units} == {("CQADupStack", "t2t", cqa.instruction)}
    assert (units[0].source.layout, units[0].source.path) == ("mteb", "mteb/CQADupstackAndroidRetrieval")
    assert (units[1].source.layout, units[1].source.path) == ("beir", "mteb/cqadupstack-english")
    assert cqa.composite is None and [t.name for t in load_tasks("ArguAna")[0].units()] == ["ArguAna"]


def test_a_composite_scores_the_mean_of_its_parts():
    (cqa,) = load_tasks("CQADupStack")
    scores = {u.name: float(i) for i, u in enumerate(cqa.units())}  # 0 … 11
    assert cqa.aggregate(scores) == 5.5
    (arguana,) = load_tasks("ArguAna")
    assert arguana.aggregate({"ArguAna": 0.25}) == 0.25
    del scores["CQADupStack-tex"]
    scores["CQADupStack-texx"] = 1.0
    with pytest.raises(MRBError) as err:
        cqa.aggregate(scores)
    assert str(err.value) == (
        "task 'CQADupStack': cannot aggregate part scores (missing CQADupStack-tex; unexpected CQADupStack-texx)"
    )


def test_a_task_without_a_pack_names_the_build_command(tmp_path):
    (arguana,) = load_tasks("ArguAna")
    with pytest.raises(MRBError) as err:
        arguana.pack_path(tmp_path)
    assert str(err.value) == (
        f"task 'ArguAna' has no candidate pack yet (looked in {tmp_path}/packs/ArguAna): "
        f"build it with `mrb candidates build --tasks ArguAna --retriever gme-qwen2-vl-2b --data-dir {tmp_path}`, "
        "or pass --build-missing to `mrb run`"
    )
    (tmp_path / "packs" / "ArguAna").mkdir(parents=True)
    assert arguana.pack_path(tmp_path) == tmp_path / "packs" / "ArguAna"


def test_a_part_without_a_pack_names_its_composite(tmp_path):
    (cqa,) = load_tasks("CQADupStack")
    with pytest.raises(MRBError) as err:
        cqa.units()[3].pack_path(tmp_path)
    assert str(err.value) == (
        f"task 'CQADupStack-gis' has no candidate pack yet (looked in {tmp_path}/packs/CQADupStack-gis): "
        f"build it with `mrb candidates build --tasks CQADupStack --retriever gme-qwen2-vl-2b --data-dir {tmp_path}`, "
        "or pass --build-missing to `mrb run`"
    )
    with pytest.raises(MRBError) as err:
        cqa.pack_path(tmp_path)
    assert str(err.value) == ("task 'CQADupStack' is a composite of 12 parts, each with its own pack: use TaskSpec.units()")


def test_a_declared_pack_is_relative_to_its_yaml(tmp_path):
    (tmp_path / "t.yaml").write_text("name: Mini\ntype: t2i\ninstruction: Find it.\npack: packs/mini\n")
    task = load_task_file(tmp_path / "t.yaml")
    with pytest.raises(MRBError) as err:
        task.pack_path()
    assert str(err.value) == (f"task 'Mini': pack folder {tmp_path}/packs/mini does not exist (declared as pack: 'packs/mini')")
    (tmp_path / "packs" / "mini").mkdir(parents=True)
    assert task.pack_path() == tmp_path / "packs" / "mini"


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MRB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "mrb"
    monkeypatch.setenv("MRB_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("source: {layout: beir, path: mteb/x, revision: " + REV + ", config: en}\n", "unknown key 'source.config'"),
        (
            "source: {layout: csv, path: mteb/x, revision: " + REV + "}\n",
            "source.layout: Input should be 'beir', 'mteb', 'mbeir', 'vidore' or 'mteb2'",
        ),
        (
            "source: {layout: beir, path: mteb/x, revision: main}\n",
            "source.revision: String should match pattern '^[0-9a-f]{40}$'",
        ),
        (
            "source: {layout: beir, path: ../data, revision: " + REV + "}\n",
            "source: Value error, a source with a revision is a hub dataset named owner/name, not '../data' "
            "(a local folder has no revision)",
        ),
        ("sizes: {queries: 3, documents: 0, qrels: 1}\npack: p\n", "sizes.documents: Input should be greater than 0"),
        ("description: nothing to read\n", "(top level): Value error, a task needs a hub source, a pack folder or parts"),
        (
            "source: {layout: beir, path: mteb/x, revision: " + REV + "}\n"
            "parts:\n- {name: a, source: {layout: beir, path: mteb/a, revision: " + REV + "}}\n"
            "- {name: b, source: {layout: beir, path: mteb/b, revision: " + REV + "}}\n",
            "(top level): Value error, a composite task (parts) takes its source and pack from each part, not from the task",
        ),
        (
            "parts:\n- {name: a, source: {layout: beir, path: mteb/a, revision: " + REV + "}}\n"
            "- {name: a, source: {layout: beir, path: mteb/b, revision: " + REV + "}}\n",
            "(top level): Value error, part name(s) a repeated",
        ),
        (
            "parts:\n- {name: a, source: {layout: beir, path: mteb/a, revision: " + REV + "}}\n",
            "parts: Tuple should have at least 2 items after validation, not 1",
        ),
    ],
)
def test_the_source_schema_is_strict(tmp_path, body, problem):
    path = tmp_path / "t.yaml"
    path.write_text("name: T\ntype: t2t\ninstruction: Find it.\n" + body)
    with pytest.raises(MRBError) as err:
        load_task_file(path)
    assert str(err.value) == f"{path}: {problem}"


def test_docs_tasks_md_is_generated_from_the_yaml():
    script = runpy.run_path(str(ROOT / "scripts" / "gen_tasks_doc.py"))
    assert script["main"](["--check"]) == 0, "docs/tasks.md is stale: run python scripts/gen_tasks_doc.py"
    text = (ROOT / "docs" / "tasks.md").read_text()
    assert "| tasks | 14 | 1 | 4 | 5 | 4 | 2 | 5 | 2 | 3 | 40 |" in text
    assert (
        "| 7 | MSMARCO | T→T *(inferred)* | `mteb/msmarco` | beir | dev | `c5a29a104738b98a9e76336939199e264163d4a0` "
        "| 6,980 | 8,841,823 | 7,437 | Given a web search query, retrieve relevant passages that answer the query |"
    ) in text


def test_fidelity_choices_are_stated():
    [fashion] = load_tasks("Fashion200K-I2T")
    assert fashion.instruction == "Find a product description for the fashion item in the image."
    assert fashion.description.startswith("instruction from M-BEIR (task 3, image to text), not MTEB's")
    page = (ROOT / "docs" / "tasks.md").read_text(encoding="utf-8")
    assert "T→T keeps 14 of UMRB's 16 text sets (15 BEIR sets and WebQA) by dropping FEVER and QuoraRetrieval" in page
    assert page.count("| T→T *(inferred)* |") == 14 and page.count("| T→VD *(inferred)* |") == 5
