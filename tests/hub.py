"""A stand-in for the Hugging Face hub: dataset repos written as the hub holds them, served to
`mrb.sources` by a fake ``snapshot_download`` (the `hub` fixture)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from mrb import sources
from mrb.sources import download
from mrb.tasks import TaskSpec

REV = "0123456789abcdef0123456789abcdef01234567"


def write_repo(folder: Path, configs: dict[str, dict[str, Dataset]]) -> None:
    """A dataset repo as the hub holds it: one parquet file per config and split, declared in README.md."""
    declared = []
    for config, splits in configs.items():
        files = []
        for split, dataset in splits.items():
            path = f"{config}/{split}-00000-of-00001.parquet"
            (folder / config).mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(folder / path)
            files.append({"split": split, "path": path})
        declared.append({"config_name": config, "data_files": files})
    (folder / "README.md").write_text("---\n" + yaml.safe_dump({"configs": declared}, sort_keys=False) + "---\n")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A stand-in for the hub: repos written under tmp/hub/<repo>/<rev>, served by a fake snapshot_download."""
    root = tmp_path / "hub"
    calls = []

    def snapshot_download(repo_id, *, repo_type, revision, local_dir):
        calls.append((repo_id, repo_type, revision, Path(local_dir)))
        shutil.copytree(root / repo_id / revision, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / ".cache" / "huggingface" / "README.md.metadata").write_text("x")
        return str(local_dir)

    monkeypatch.setattr(sources, "snapshot_download", snapshot_download)

    def publish(repo: str, configs: dict[str, dict[str, Dataset]], revision: str = REV) -> None:
        write_repo(root / repo / revision, configs)

    publish.calls = calls
    return publish


def mirror(hub, data_dir: Path, spec: TaskSpec, repo: dict[str, dict[str, Dataset]]) -> TaskSpec:
    """Publish a repo under the task's source path on the fake hub and mirror it into data_dir."""
    hub(spec.source.path, repo)
    download([spec], data_dir)
    return spec
