"""Pack reading and its errors: every inconsistency names the pack and the id."""

import errno
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrb.data import RECORD_BATCH, Record, read_pack, sha256_file
from mrb.errors import MRBError
from tests.packs import candidate_lists, qrels_dict, small_text_task, write_task
from tests.tiny_models import image_bytes


@pytest.fixture
def pack_dir(tmp_path):
    small_text_task(tmp_path)
    return tmp_path / "packs" / "Small-T2T"


def rewrite(pack_dir, name, frame):
    """Replace a pack file and its hash in the manifest (a pack written wrong, not one changed later)."""
    path = pack_dir / f"{name}.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    manifest["sha256"][path.name] = sha256_file(path)
    (pack_dir / "manifest.json").write_text(json.dumps(manifest))


def test_round_trip_and_manifest_hashes(pack_dir):
    pack = read_pack(pack_dir)
    assert candidate_lists(pack) == {"q1": ["d1", "d0", "d2", "d3"], "q2": ["d0", "d3"]}
    assert qrels_dict(pack) == {"q1": {"d0": 2, "d2": 1, "d1": 0}, "q2": {"d3": 1}}
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


def test_a_changed_byte_fails_verification(pack_dir):
    path = pack_dir / "candidates.parquet"
    expected = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(MRBError) as err:
        read_pack(pack_dir)
    assert str(err.value) == (
        f"pack {pack_dir}: candidates.parquet does not match manifest.json (sha256 {sha256_file(path)}, expected "
        f"{expected}): the file changed after the pack was built"
    )


def test_manifest_without_hashes(pack_dir):
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    del manifest["sha256"]["qrels.parquet"]
    (pack_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MRBError) as err:
        read_pack(pack_dir)
    assert str(err.value) == f"pack {pack_dir}: manifest.json has no sha256 for qrels.parquet"


def test_corrupt_image_names_the_record():
    with pytest.raises(MRBError, match=r"record 'doc-7': image does not decode"):
        Record("doc-7", None, b"not a jpeg").image()


def image_pack(root):
    """One text query over 150 image documents (random byte strings of 1 to 5000 bytes, one real PNG)
    and one text document: more rows than a read batch."""
    rng = np.random.default_rng(3)
    blobs = {f"d{i}": rng.bytes(int(rng.integers(1, 5000))) for i in range(150)}
    blobs["d7"] = image_bytes("coffee", (24, 16))
    docs = [Record(d, None, b) for d, b in blobs.items()] + [Record("text", "words only")]
    write_task(
        root,
        "Pics",
        type_code="t2i",
        queries=[Record("q", "a query")],
        documents=docs,
        candidates=[("q", d.id, i + 1, 1.0) for i, d in enumerate(docs)],
        qrels=[("q", "d7", 1)],
    )
    return root / "packs" / "Pics", blobs


def test_pack_images_stay_on_disk_and_read_back_exactly(tmp_path):
    pack_dir, blobs = image_pack(tmp_path)
    assert len(blobs) > 2 * RECORD_BATCH
    pack = read_pack(pack_dir)
    assert all(pack.documents[d].image_bytes is None and pack.documents[d].has_image for d in blobs)
    with ThreadPoolExecutor(4) as pool:  # the runner's prefetch threads read concurrently
        got = dict(zip(blobs, pool.map(lambda d: pack.documents[d].encoded_image(), blobs)))
    assert got == blobs
    assert pack.documents["d7"].image().size == (24, 16)
    text = pack.documents["text"]
    assert (text.has_image, text.encoded_image(), text.image()) == (False, None, None)


def test_no_space_for_the_image_store_is_a_clear_error(tmp_path, monkeypatch):
    pack_dir, _ = image_pack(tmp_path)

    class FullDisk:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **_: FullDisk())
    with pytest.raises(MRBError) as err:
        read_pack(pack_dir)
    assert str(err.value) == (
        f"pack {pack_dir}: documents.parquet: cannot keep its images in the temporary folder {tempfile.gettempdir()} "
        "([Errno 28] No space left on device); free space there or point TMPDIR at a larger disk"
    )
