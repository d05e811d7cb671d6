"""Task YAML schema, catalogue loading and selection, and their error messages."""

from pathlib import Path

import pytest

from mrb.errors import MRBError
from mrb.tasks import Catalogue, Category, TaskType, load_task_file, load_tasks
from tests.packs import small_text_task


def catalogue(tmp_path: Path, files: dict[str, str]) -> Catalogue:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return Catalogue([tmp_path])


TASK = "name: {name}\ntype: {type}\ninstruction: Find it.\npack: packs/{name}\n"


def test_type_codes_labels_and_categories():
    assert [t.label for t in TaskType] == ["T→T", "I→I", "T→I", "T→VD", "I→T", "T→IT", "IT→T", "IT→I", "IT→IT"]
    assert TaskType.T2VD.document_side == "i"
    assert TaskType.IT2T.query_side == "it"
    assert {t.value for t in TaskType if t.category is Category.CROSS} == {"t2i", "t2vd", "i2t"}
    assert {t.value for t in TaskType if t.category is Category.FUSED} == {"t2it", "it2t", "it2i", "it2it"}


def test_defaults_and_pack_path(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(TASK.format(name="A", type="t2i"))
    spec = load_task_file(path)
    assert (spec.metric, spec.depth, spec.category) == ("nDCG@10", 100, Category.CROSS)
    assert spec.pack_location() == tmp_path / "packs" / "A"


def test_selection_by_name_glob_type_category_suite_and_all(tmp_path):
    cat = catalogue(
        tmp_path,
        {
            "a.yaml": TASK.format(name="Alpha-T2T", type="t2t"),
            "b.yaml": TASK.format(name="Beta-T2I", type="t2i"),
            "c.yaml": TASK.format(name="Gamma-IT2T", type="it2t"),
            "s.yaml": "suite: pair\ntasks: [Alpha-T2T, 'G*']\n",
        },
    )
    names = lambda sel: [t.name for t in cat.select(sel)]  # noqa: E731
    assert names("all") == ["Alpha-T2T", "Beta-T2I", "Gamma-IT2T"]
    assert names("Beta-T2I") == ["Beta-T2I"]
    assert names("*-T2*") == ["Alpha-T2T", "Beta-T2I"]
    assert names("it2t") == ["Gamma-IT2T"]
    assert names("cross-modal") == ["Beta-T2I"]
    assert names("single") == ["Alpha-T2T"]
    assert names("pair") == ["Alpha-T2T", "Gamma-IT2T"]
    assert names("Gamma-IT2T, Alpha-T2T,Gamma-IT2T") == ["Gamma-IT2T", "Alpha-T2T"]


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: X\ntype: t2t\ninstruction: [unclosed\npack: p\n")
    with pytest.raises(MRBError, match=r"bad\.yaml: line 4, column \d+: malformed YAML"):
        load_task_file(path)


def test_unknown_key_is_rejected(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text(TASK.format(name="K", type="t2t") + "instructions: typo\n")
    with pytest.raises(MRBError) as err:
        load_task_file(path)
    assert str(err.value) == f"{path}: unknown key 'instructions'"


def test_unknown_type_code(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(TASK.format(name="T", type="t2x"))
    with pytest.raises(MRBError) as err:
        load_task_file(path)
    assert str(err.value) == (
        f"{path}: unknown type code 't2x' (expected one of t2t, i2i, t2i, t2vd, i2t, t2it, it2t, it2i, it2it)"
    )


def test_unknown_metric(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(TASK.format(name="M", type="t2t") + "metric: nDCG@@10\n")
    with pytest.raises(MRBError, match=r"metric: Value error, unknown metric 'nDCG@@10'"):
        load_task_file(path)


def test_unknown_task_suggests_close_names(tmp_path):
    cat = catalogue(tmp_path, {"a.yaml": TASK.format(name="Alpha-T2T", type="t2t")})
    with pytest.raises(MRBError) as err:
        cat.select("Alpa-T2T")
    assert str(err.value) == "no task matches 'Alpa-T2T'. Did you mean: Alpha-T2T?"


def test_empty_selection(tmp_path):
    cat = catalogue(tmp_path, {"a.yaml": TASK.format(name="Alpha-T2T", type="t2t")})
    with pytest.raises(MRBError, match="empty task selection"):
        cat.select(" , ")


def test_suite_naming_unknown_task_fails_at_load(tmp_path):
    with pytest.raises(MRBError, match="no task matches 'Nope'"):
        catalogue(tmp_path, {"a.yaml": TASK.format(name="A", type="t2t"), "s.yaml": "suite: s\ntasks: [Nope]\n"})


def test_duplicate_task_name(tmp_path):
    with pytest.raises(MRBError, match=r"b\.yaml: name 'A' is already defined"):
        catalogue(tmp_path, {"a.yaml": TASK.format(name="A", type="t2t"), "b.yaml": TASK.format(name="A", type="i2t")})


def test_load_tasks_from_a_folder(tmp_path):
    small_text_task(tmp_path)
    assert [t.name for t in load_tasks("all", task_dirs=[tmp_path])] == ["Small-T2T"]


def test_all_types_and_categories_range_over_the_mrb_suite_names_reach_everything():
    assert len(load_tasks("all")) == 40
    assert [t.name for t in load_tasks("t2i")] == ["VisualNews-T2I", "Fashion200K-T2I", "MSCOCO-T2I", "Flickr30K-T2I"]
    assert all(not t.name.startswith("Mini") for t in load_tasks("cross-modal"))
    assert len(load_tasks("mini")) == 5 and len(load_tasks("Mini*")) == 5
