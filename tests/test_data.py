"""Pack reading and its errors: every inconsistency names the pack and the id."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrb.data import Record, read_pack, sha256_file
from mrb.errors import MRBError
from tests.packs import small_text_task


@pytest.fixture
def pack_dir(tmp_path):
    small_text_task(tmp_path)
    return tmp_path / "packs" / "Small-T2T"


def rewrite(pack_dir, name, frame):
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), pack_dir / f"{name}.parquet")


def test_round_trip_and_manifest_hashes(pack_dir):
    pack = read_pack(pack_dir)
    assert pack.candidate_lists() == {"q1": ["d1", "d0", "d2", "d3"], "q2": ["d0", "d3"]}
    assert pack.qrels_dict() == {"q1": {"d0": 2, "d2": 1, "d1": 0}, "q2": {"d3": 1}}
    assert pack.queries["q1"] == Record("q1", "cats", None)
    hashes = json.loads((pack_dir / "manifest.json").read_text())["sha256"]
    assert hashes == {f.name: sha256_file(f) for f in sorted(pack_dir.glob("*.parquet"))}


def test_missing_file(pack_dir):
    (pack_dir / "qrels.parquet").unlink()
    with pytest.raises(MRBError) as err:
        read_pack(pack_dir)
    assert str(err.value) == f"pack {pack_dir}: missing file qrels.parquet"


def test_wrong_columns(pack_dir):
    rewrite(pack_dir, "qrels", pd.DataFrame({"qid": ["q1"], "doc_id": ["d0"], "relevance": [1]}))
    with pytest.raises(MRBError) as err:
        read_pack(pack_dir)
    assert str(err.value) == (
        f"pack {pack_dir}: qrels.parquet lacks column(s) query_id (has qid, doc_id, relevance; expected query_id, doc_id, relevance)"
    )


def test_candidate_absent_from_documents(pack_dir):
    frame = pd.read_parquet(pack_dir / "candidates.parquet")
    frame.loc[3, "doc_id"] = "ghost"
    rewrite(pack_dir, "candidates", frame)
    with pytest.raises(MRBError) as err:
        read_pack(pack_dir)
    assert str(err.value) == f"pack {pack_dir}: candidate doc id 'ghost' (query 'q1') is absent from documents.parquet"


def test_duplicate_candidate_entries(pack_dir):
    frame = pd.read_parquet(pack_dir / "candidates.parquet")
    frame = pd.concat([frame, frame.iloc[[0]].assign(rank=9)])
    rewrite(pack_dir, "candidates", frame)
    with pytest.raises(MRBError) as err:
        read_pack(pack_dir)
    assert str(err.value) == f"pack {pack_dir}: duplicate candidate entry: query 'q1', doc 'd1'"


def test_record_without_text_or_image(pack_dir):
    rewrite(pack_dir, "queries", pd.DataFrame({"id": ["q1", "q2"], "text": ["cats", None], "image": [None, None]}))
    with pytest.raises(MRBError, match=r"queries\.parquet record 'q2' has neither text nor image"):
        read_pack(pack_dir)


def test_corrupt_image_names_the_record():
    with pytest.raises(MRBError, match=r"record 'doc-7': image does not decode"):
        Record("doc-7", None, b"not a jpeg").image()
