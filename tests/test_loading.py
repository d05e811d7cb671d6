"""Loading a model: nothing before it has pairs to score, and each way a checkpoint fails to load told apart."""

from __future__ import annotations

import json

import huggingface_hub.errors as hub_errors
import pytest
import transformers

import mrb
from mrb.errors import MRBError
from mrb.rerankers.qwen_vl import QwenVLYesNo
from tests.tiny_models import PIXELS, artefact


def test_a_model_loads_only_when_it_has_pairs_to_score(tmp_path_factory, tmp_path):
    folder = str(artefact(tmp_path_factory, "qwen2_5_vl"))
    first = QwenVLYesNo(folder, **PIXELS)
    assert not first.loaded  # building it read no weights
    mrb.evaluate(first, "MiniPhotos-I2T", output_dir=tmp_path, quiet=True, name="tiny")
    assert first.loaded
    again = QwenVLYesNo(folder, **PIXELS)
    board = mrb.evaluate(again, "MiniPhotos-I2T", output_dir=tmp_path, quiet=True, name="tiny")
    assert json.loads(board["provenance"].iloc[0])["cache_hits"] == 320
    assert not again.loaded  # every score came from the cache: the weights were never read


def failing(exc: BaseException):
    def load(self) -> None:
        raise exc

    return load


def hub_error(cls: type, message: str) -> BaseException:
    from unittest.mock import Mock

    return cls(message, response=Mock(status_code=404, headers={}, request=Mock()))


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (
            OSError("We couldn't connect to 'https://huggingface.co'"),
            None,  # set below: the chain's LocalEntryNotFoundError decides
        ),
        (
            hub_error(hub_errors.GatedRepoError, "Access to model org/gated is restricted"),
            "it is a gated repository: accept its conditions on https://huggingface.co/org/model and log in "
            "(`hf auth login`, or set HF_TOKEN)",
        ),
        (
            hub_error(hub_errors.RevisionNotFoundError, "Invalid rev id: abc"),
            "the hub has no revision 'abc' of it: check the revision (a preset's pin, or --revision)",
        ),
        (
            hub_error(hub_errors.RepositoryNotFoundError, "Repository Not Found"),
            "it is neither a local folder nor a hub repository you can read (a typo, or a private repository: `hf auth login`)",
        ),
        (
            ModuleNotFoundError("No module named 'torchvision'", name="torchvision"),
            "a package it needs is missing (ModuleNotFoundError: No module named 'torchvision'): pip install 'mrb[vision]'",
        ),
        (
            ValueError(
                "The checkpoint you are trying to load has model type `qwen9_vl` but Transformers does not recognize this architecture."
            ),
            f"transformers {transformers.__version__} does not know its model type (ValueError: The checkpoint you are trying to "
            "load has model type `qwen9_vl` but Transformers does not recognize this architecture.): pip install -U transformers",
        ),
    ],
    ids=["offline", "gated", "revision", "no-repo", "missing-extra", "old-transformers"],
)
def test_each_loading_failure_says_what_is_wrong_and_how_to_fix_it(monkeypatch, raised, reason):
    if reason is None:  # offline: transformers' OSError caused by huggingface_hub's LocalEntryNotFoundError
        raised.__cause__ = hub_errors.LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
        reason = (
            "it is not in the local hub cache and the hub is off (HF_HUB_OFFLINE=1): fetch it where the hub can be reached "
            "(`hf download org/model --revision abc` and copy the hub cache here), or unset HF_HUB_OFFLINE"
        )
    monkeypatch.setattr(QwenVLYesNo, "load", failing(raised))
    reranker = QwenVLYesNo("org/model", revision="abc")
    with pytest.raises(MRBError) as err:
        reranker.ready()
    assert str(err.value) == f"QwenVLYesNo cannot load 'org/model': {reason}"


def test_the_main_job_offline_without_packs_is_one_error_line_naming_the_command(tmp_path, capsys):
    from mrb.cli import main

    assert main(["run", "--model", "gmr-7b", "--tasks", "all", "--data-dir", str(tmp_path), "--output", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == (
        f"mrb: error: 40 tasks have no candidate pack yet in {tmp_path / 'packs'}: ArguAna, ClimateFEVER, CQADupStack, DBPedia, "
        f"FiQA2018 and 35 more; build them with `mrb candidates build --tasks all --retriever gme-qwen2-vl-2b --data-dir {tmp_path}` "
        f"(a GPU machine: docs/candidates.md), fetch published ones with `mrb candidates pull --repo REPO --tasks all --data-dir "
        f"{tmp_path}`, or pass --build-missing to `mrb run`\n"
    )
    assert not (tmp_path / "r").exists()  # refused before the results folder, the lock or the model


def test_a_dry_run_prints_the_plan_and_scores_nothing(tmp_path, capsys):
    from mrb.cli import main

    out = tmp_path / "r"
    assert main(["run", "--model", "bm25", "--tasks", "mini", "--output", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "plan of bm25: 1 task; unsupported (its sides): MiniPhotos-T2I, MiniPhotos-I2T, MiniPhotoQA-IT2T, MiniPhotos-I2I",
        "task           type         pairs      cached    to score",
        "MiniFacts-T2T  T→T            320           0         320",
        "total                         320           0         320",
        printed[4],
        "disk: about 38 KiB for the score cache and the result files",
    ]
    assert printed[4].startswith("time: unknown (no pairs/s measured for this model on cpu")
    assert not (out / "leaderboard.parquet").exists()
    assert main(["run", "--model", "bm25", "--tasks", "mini", "--output", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["run", "--model", "bm25", "--tasks", "mini", "--output", str(out), "--dry-run"]) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1]
        == "nothing to score: every pair is in the score cache, so the model will not be loaded"
    )


def test_a_plan_estimates_time_from_a_presets_measured_rate():
    from mrb.plan import Plan, TaskPlan

    plan = Plan("gmr-7b", [TaskPlan("ArguAna", "T→T", 140_600, 600)], 73.4, "measured for gmr-7b on an H200: docs/running.md", [])
    assert plan.render().splitlines()[-2:] == [
        "time: about 32 min at 73.4 pairs/s (measured for gmr-7b on an H200: docs/running.md)",
        "disk: about 16.0 MiB for the score cache and the result files",
    ]


def test_weights_not_yet_downloaded_are_identified_by_the_hubs_commit_and_that_commit_loads(monkeypatch):
    """Before its first download a hub checkpoint is identified by the commit the hub resolves its revision to (not
    None, which the same model would not match after the download), and the model loads exactly that commit."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    from mrb.identity import identify

    commit = "0123456789abcdef0123456789abcdef01234567"
    asked: list[tuple[str, str | None]] = []

    def model_info(self, repo, revision=None, **_):
        asked.append((repo, revision))
        return SimpleNamespace(sha=commit)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    reranker = QwenVLYesNo("org/not-downloaded", revision="main")
    assert (reranker.weights, reranker.load_revision, asked) == ({"commit": commit}, commit, [("org/not-downloaded", "main")])
    loaded: list[str | None] = []

    def load_pretrained(auto_class, source, **options):
        loaded.append(options["revision"])
        raise RuntimeError("stopped after the revision was read")

    monkeypatch.setattr("mrb.rerankers.hf.load_pretrained", load_pretrained)
    with pytest.raises(MRBError, match="stopped after the revision was read"):
        reranker.ready()
    assert loaded == [commit]
    assert identify(reranker).fields["settings"]["weights"] == {"commit": commit}
