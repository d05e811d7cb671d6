"""write_pack streams any iterable of records, and replaces a pack only with a complete, consistent one."""

from __future__ import annotations

import pandas as pd
import pytest

from mrb.data import Record, read_pack, sha256_file, write_pack
from mrb.errors import MRBError

CANDIDATES = pd.DataFrame({"query_id": ["q1", "q1"], "doc_id": ["d1", "d2"], "rank": [1, 2], "score": [0.9, 0.5]})
QRELS = pd.DataFrame({"query_id": ["q1"], "doc_id": ["d2"], "relevance": [1]})


def documents(n: int, fail_at: int | None = None):
    for i in range(1, n + 1):
        if i == fail_at:
            raise MRBError(f"document 'd{i}': image does not decode")
        yield Record(f"d{i}", f"text {i}")


QUERIES = (Record("q1", "query"),)


def write(folder, docs, candidates=CANDIDATES, queries=QUERIES):
    return write_pack(folder, queries=list(queries), documents=docs, candidates=candidates, qrels=QRELS, manifest={"task": "T"})


def test_a_generator_is_written_in_row_groups_with_counts(tmp_path):
    import pyarrow.parquet as pq

    write(tmp_path / "pack", documents(600))
    pack = read_pack(tmp_path / "pack")
    assert list(pack.documents) == [f"d{i}" for i in range(1, 601)]
    assert pq.ParquetFile(tmp_path / "pack" / "documents.parquet").metadata.num_row_groups == 3  # 256, 256, 88
    assert pack.manifest["counts"] == {"queries": 1, "documents": 600, "candidates": 2, "qrels": 1}


@pytest.mark.parametrize(
    ("docs", "candidates", "message"),
    [
        (lambda: documents(600, fail_at=300), CANDIDATES, "document 'd300': image does not decode"),
        (
            lambda: iter([Record("d1", "a"), Record("d2", "b"), Record("d1", "c")]),
            CANDIDATES,
            "cannot write pack {folder}: documents.parquet would repeat id 'd1'",
        ),
        (
            lambda: iter([Record("d1", "a"), Record("d2")]),
            CANDIDATES,
            "cannot write pack {folder}: documents record 'd2' has neither text nor image",
        ),
        (
            lambda: documents(1),
            CANDIDATES,
            "cannot write pack {folder}: candidate (query 'q1', doc 'd2') names a document that documents.parquet lacks",
        ),
    ],
)
def test_an_error_leaves_the_earlier_pack_as_it_was(tmp_path, docs, candidates, message):
    folder = tmp_path / "pack"
    write(folder, documents(2))
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    with pytest.raises(MRBError) as err:
        write(folder, docs(), candidates)
    assert str(err.value) == message.format(folder=folder)
    assert {p.name: sha256_file(p) for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]  # no staging folder left behind
