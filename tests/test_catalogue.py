"""--task-dir adds to the bundled catalogue: selections mix both, clashes name both files, hints carry the folder."""

from pathlib import Path

import pytest

from mrb.cli import main
from mrb.errors import MRBError
from mrb.tasks import bundled_tasks_dir, load_tasks
from tests.packs import small_text_task


@pytest.fixture
def own(tmp_path) -> Path:
    small_text_task(tmp_path / "tasks")
    return tmp_path / "tasks"


def test_task_dir_adds_to_the_bundled_catalogue(own):
    names = [t.name for t in load_tasks("mini,Small-T2T", task_dirs=[own])]
    assert names == ["MiniFacts-T2T", "MiniPhotos-T2I", "MiniPhotos-I2T", "MiniPhotoQA-IT2T", "MiniPhotos-I2I", "Small-T2T"]
    assert [t.name for t in load_tasks("all", task_dirs=[own])] == ["Small-T2T"]  # `all`: the folder's own tasks
    assert [t.name for t in load_tasks("t2t", task_dirs=[own])] == ["Small-T2T"]
    (small,) = load_tasks("Small-T2T", task_dirs=[own, own])  # a folder given twice is read once
    (mini,) = load_tasks("MiniFacts-T2T", task_dirs=[own])
    assert (small.task_dir, mini.task_dir) == (own, None)
    assert len(load_tasks("all", task_dirs=[bundled_tasks_dir()])) == 40  # the bundled folder itself adds nothing


def test_a_name_clash_names_both_files(own):
    (own / "clash.yaml").write_text("name: MiniFacts-T2T\ntype: t2t\ninstruction: x\npack: packs/Small-T2T\n")
    with pytest.raises(MRBError) as err:
        load_tasks("mini", task_dirs=[own])
    assert str(err.value) == (
        f"{own}/clash.yaml: name 'MiniFacts-T2T' is already defined in {bundled_tasks_dir()}/mini/MiniFacts-T2T.yaml"
    )


def test_hints_carry_the_task_dir(own, tmp_path, capsys):
    (own / "Built.yaml").write_text(
        "name: Built\ntype: t2t\ninstruction: x\nfirst_stage: minilm\n"
        "source: {layout: beir, path: org/data, revision: " + "a" * 40 + "}\n"
    )
    (built,) = load_tasks("Built", task_dirs=[own])
    assert built.build_command("/d") == f"mrb candidates build --tasks Built --task-dir {own} --retriever minilm --data-dir /d"
    assert main(["tasks", "--tasks", "Zzz", "--task-dir", str(own)]) == 2
    assert capsys.readouterr().err == f"mrb: error: no task matches 'Zzz'. See `mrb tasks --task-dir {own}` for the catalogue.\n"
    assert main(["tasks", "--task-dir", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"mrb: error: task folder {tmp_path}/nowhere does not exist (given as --task-dir)\n"


def test_the_download_hint_carries_the_task_dir(own, tmp_path):
    from mrb.sources import SourceReader

    (own / "Hub.yaml").write_text(
        "name: Hub\ntype: t2t\ninstruction: x\nsource: {layout: beir, path: org/data, revision: " + "b" * 40 + "}\n"
    )
    (hub,) = load_tasks("Hub", task_dirs=[own])
    with pytest.raises(MRBError) as err:
        SourceReader(hub, tmp_path / "data")
    assert str(err.value).endswith(
        f"forbids fetching it; run `mrb download --tasks Hub --task-dir {own} --data-dir {tmp_path}/data`"
    )
