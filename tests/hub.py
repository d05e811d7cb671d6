"""A stand-in for the Hugging Face hub: dataset repos written as the hub holds them, served to
`mrb.sources` by a fake ``snapshot_download`` (the `hub` fixture)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, Features, Image, Value

from mrb import sources
from mrb.data import Pack, Record
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


def fake_snapshot_download(root: Path, calls: list):
    """A `snapshot_download` that copies ``<root>/<repo>/<revision>`` (and leaves a .cache folder, as the hub client does)."""

    def snapshot_download(repo_id, *, repo_type, revision, local_dir):
        calls.append((repo_id, repo_type, revision, Path(local_dir)))
        shutil.copytree(root / repo_id / revision, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / ".cache" / "huggingface" / "README.md.metadata").write_text("x")
        return str(local_dir)

    return snapshot_download


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A stand-in for the hub: repos written under tmp/hub/<repo>/<rev>, served by a fake snapshot_download."""
    root = tmp_path / "hub"
    calls = []
    monkeypatch.setattr(sources, "snapshot_download", fake_snapshot_download(root, calls))

    def publish(repo: str, configs: dict[str, dict[str, Dataset]], revision: str = REV) -> None:
        write_repo(root / repo / revision, configs)

    publish.calls = calls
    return publish


def mirror_repo(data_dir: Path, spec: TaskSpec, repo: dict[str, dict[str, Dataset]]) -> TaskSpec:
    """Mirror a repo into data_dir as `mrb download` would, without the `hub` fixture (for module-scoped data)."""
    root = data_dir / "hub"
    write_repo(root / spec.source.path / spec.source.revision, repo)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "snapshot_download", fake_snapshot_download(root, []))
        download([spec], data_dir)
    return spec


def mirror(hub, data_dir: Path, spec: TaskSpec, repo: dict[str, dict[str, Dataset]]) -> TaskSpec:
    """Publish a repo under the task's source path on the fake hub and mirror it into data_dir."""
    hub(spec.source.path, repo)
    download([spec], data_dir)
    return spec


def pack_as_repo(pack: Pack, layout: str) -> dict[str, dict[str, Dataset]]:
    """A pack's queries, documents and qrels as a raw hub repo: the older BEIR text layout ("beir")
    or M-BEIR ("mbeir", text and images). Used to rebuild the bundled mini packs from "raw sources"."""
    qrels = {
        "query-id": pack.qrels["query_id"].tolist(),
        "corpus-id": pack.qrels["doc_id"].tolist(),
        "score": pack.qrels["relevance"].astype(float).tolist(),
    }
    if layout == "beir":
        docs = list(pack.documents.values())
        corpus = Dataset.from_dict({"_id": [d.id for d in docs], "title": [""] * len(docs), "text": [d.text for d in docs]})
        queries = Dataset.from_dict({"_id": list(pack.queries), "text": [q.text for q in pack.queries.values()]})
        return {"corpus": {"corpus": corpus}, "queries": {"queries": queries}, "default": {"test": Dataset.from_dict(qrels)}}
    side = Features({"id": Value("string"), "modality": Value("string"), "text": Value("string"), "image": Image()})

    def records(items: list[Record]) -> Dataset:
        return Dataset.from_dict(
            {
                "id": [r.id for r in items],
                "modality": [",".join(m for m, v in (("image", r.has_image), ("text", r.text)) if v) for r in items],
                "text": [r.text for r in items],
                "image": [None if not r.has_image else {"bytes": r.encoded_image(), "path": None} for r in items],
            },
            features=side,
        )

    return {
        "query": {"test": records(list(pack.queries.values()))},
        "corpus": {"corpus": records(list(pack.documents.values()))},
        "qrels": {"test": Dataset.from_dict({**qrels, "Q0": ["Q0"] * len(pack.qrels)})},
    }
