"""The hub readers, on local datasets shaped like the four hub layouts, read from a mirror."""

import io
import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from mrb import sources
from mrb.errors import MRBError
from mrb.sources import SourceReader, download, mirror_path
from mrb.tasks import TaskSpec, load_task_file
from tests.hub import REV, hub, mirror  # noqa: F401 (hub is a fixture)

OTHER_REV = "fedcba9876543210fedcba9876543210fedcba98"


def png(width: int, height: int, colour: str = "red") -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


RED, BLUE, GREEN = png(4, 3), png(5, 2, "blue"), png(2, 2, "green")
JUNK = b"these bytes are not an image"


def image(data: bytes | None) -> dict | None:
    return None if data is None else {"bytes": data, "path": None}


def task(name: str, type_: str, layout: str, path: str, split: str = "test", **extra) -> TaskSpec:
    source = {"layout": layout, "path": path, "revision": REV, "split": split}
    return TaskSpec(name=name, type=type_, instruction="Find it.", source=source, **extra)


def qrels_error(spec: TaskSpec, data_dir: Path) -> str:
    with pytest.raises(MRBError) as err:
        _ = SourceReader(spec, data_dir).qrels
    return str(err.value)


def read_all(reader: SourceReader) -> tuple[list[dict], list[dict], list[dict]]:
    queries = [row for batch in reader.queries(batch_size=2) for row in batch.to_pylist()]
    corpus = [row for batch in reader.corpus(batch_size=2) for row in batch.to_pylist()]
    return queries, corpus, reader.qrels.to_dict("records")


# ---------------------------------------------------------------- the four layouts


def beir_repo() -> dict[str, dict[str, Dataset]]:
    """Older BEIR text layout (mteb/arguana): corpus/queries configs with their own split names, float scores."""
    corpus = Dataset.from_dict(
        {"_id": ["d1", "d2", "d3"], "title": ["Cats", "", None], "text": ["purr.", "bark.", "moo."]},
        features=Features({"_id": Value("string"), "title": Value("string"), "text": Value("string")}),
    )
    queries = Dataset.from_dict({"_id": ["q1", "q2", "q3"], "text": ["cats?", "dogs?", "cows?"]})
    qrels = Features({"query-id": Value("string"), "corpus-id": Value("string"), "score": Value("float64")})
    test = Dataset.from_dict(
        {"query-id": ["q1", "q2", "q2"], "corpus-id": ["d1", "d2", "d9"], "score": [1.0, 2.0, 1.0]}, features=qrels
    )
    train = Dataset.from_dict({"query-id": ["q3"], "corpus-id": ["d3"], "score": [1.0]}, features=qrels)
    return {"corpus": {"corpus": corpus}, "queries": {"queries": queries}, "default": {"test": test, "train": train}}


def test_beir_layout_round_trips_through_the_reader(hub, tmp_path, caplog):
    sizes = {"queries": 2, "documents": 3, "qrels": 2}
    spec = mirror(hub, tmp_path / "data", task("ArguAna", "t2t", "beir", "mteb/arguana", sizes=sizes), beir_repo())
    with caplog.at_level(logging.WARNING, logger="mrb.sources"):
        reader = SourceReader(spec, tmp_path / "data")
        queries, corpus, qrels = read_all(reader)
    assert queries == [{"id": "q1", "text": "cats?", "image": None}, {"id": "q2", "text": "dogs?", "image": None}]
    assert corpus == [
        {"id": "d1", "text": "Cats purr.", "image": None},
        {"id": "d2", "text": "bark.", "image": None},
        {"id": "d3", "text": "moo.", "image": None},
    ]
    assert qrels == [
        {"query_id": "q1", "doc_id": "d1", "relevance": 1},
        {"query_id": "q2", "doc_id": "d2", "relevance": 2},
        {"query_id": "q2", "doc_id": "d9", "relevance": 1},
    ]
    assert reader.report.issues == {sources.QRELS_UNKNOWN_DOCUMENT: ["d9"], sources.QUERIES_WITHOUT_QRELS: ["q3"]}
    assert caplog.messages == [
        "task ArguAna: read 3 qrels, the catalogue declares 2",
        "task ArguAna: 1 qrels rows naming a document absent from the corpus (kept: relevant but unretrievable): d9",
        "task ArguAna: 1 queries without qrels (dropped): q3",
    ]


def mteb_repo() -> dict[str, dict[str, Dataset]]:
    """Newer MTEB layout (mteb/InfoSeekIT2ITRetrieval): corpus/queries/qrels configs, split test, int scores."""
    features = Features({"id": Value("string"), "title": Value("string"), "text": Value("string"), "image": Image()})
    corpus = Dataset.from_dict(
        {
            "id": ["c1", "c2", "c3"],
            "title": ["Eiffel Tower", None, "Rocket"],
            "text": ["a tower", None, None],
            "image": [image(RED), image(BLUE), None],
        },
        features=features,
    )
    queries = Dataset.from_dict(
        {"id": ["v1", "v2"], "text": ["what is this?", None], "image": [image(GREEN), image(RED)]},
        features=Features({"id": Value("string"), "text": Value("string"), "image": Image()}),
    )
    qrels = Dataset.from_dict(
        {"query-id": ["v1", "v2", "v2"], "corpus-id": ["c1", "c2", "c3"], "score": [1, 1, 1]},
        features=Features({"query-id": Value("string"), "corpus-id": Value("string"), "score": Value("int64")}),
    )
    return {"corpus": {"test": corpus}, "queries": {"test": queries}, "qrels": {"test": qrels}}


def test_mteb_layout_keeps_image_and_text_of_fused_records(hub, tmp_path):
    spec = mirror(hub, tmp_path, task("InfoSeek-IT2IT", "it2it", "mteb", "mteb/InfoSeekIT2ITRetrieval"), mteb_repo())
    reader = SourceReader(spec, tmp_path)
    queries, corpus, qrels = read_all(reader)
    assert queries == [
        {"id": "v1", "text": "what is this?", "image": GREEN},
        {"id": "v2", "text": None, "image": RED},
    ]
    assert corpus == [
        {"id": "c1", "text": "Eiffel Tower a tower", "image": RED},
        {"id": "c2", "text": None, "image": BLUE},
        {"id": "c3", "text": "Rocket", "image": None},
    ]
    assert [r["doc_id"] for r in qrels] == ["c1", "c2", "c3"]
    assert reader.report.issues == {}


def mbeir_repo() -> dict[str, dict[str, Dataset]]:
    """M-BEIR layout (mteb/mbeir_*): query/corpus/qrels configs, a corpus split, modality and Q0 columns."""
    side = Features({"id": Value("string"), "modality": Value("string"), "text": Value("string"), "image": Image()})
    queries = Dataset.from_dict(
        {
            "id": ["9:1", "9:2", "9:3"],
            "modality": ["text", "text", "text"],
            "text": ["a red square", "a blue strip", None],
            "image": [None, image(GREEN), None],
        },
        features=side,
    )
    corpus = Dataset.from_dict(
        {
            "id": ["9:10", "9:11", "9:12", "9:13"],
            "modality": ["image", "image", "image", "image"],
            "text": [None, "caption", None, None],
            "image": [image(RED), image(BLUE), image(JUNK), None],
        },
        features=side,
    )
    qrels = Dataset.from_dict(
        {
            "query-id": ["9:1", "9:2", "9:3"],
            "Q0": ["0", "0", "0"],
            "corpus-id": ["9:10", "9:11", "9:12"],
            "score": [1.0, 1.0, 1.0],
        },
        features=Features(
            {"query-id": Value("string"), "Q0": Value("string"), "corpus-id": Value("string"), "score": Value("float32")}
        ),
    )
    return {"query": {"test": queries}, "corpus": {"corpus": corpus}, "qrels": {"test": qrels}}


def test_mbeir_layout_takes_each_sides_modality_from_the_task_type(hub, tmp_path, caplog):
    spec = mirror(hub, tmp_path, task("MSCOCO-T2I", "t2i", "mbeir", "mteb/mbeir_mscoco_task0"), mbeir_repo())
    with caplog.at_level(logging.WARNING, logger="mrb.sources"):
        reader = SourceReader(spec, tmp_path)
        queries, corpus, _ = read_all(reader)
    # T→I: a query keeps only its text (9:2's image is not part of the task), a document only its image.
    assert queries == [{"id": "9:1", "text": "a red square", "image": None}, {"id": "9:2", "text": "a blue strip", "image": None}]
    assert corpus == [{"id": "9:10", "text": None, "image": RED}, {"id": "9:11", "text": None, "image": BLUE}]
    assert reader.report.counts() == {
        "queries without text (dropped)": 1,
        "documents whose image does not decode (dropped)": 1,
        "documents without an image (dropped)": 1,
    }
    assert caplog.messages == [
        "task MSCOCO-T2I: 1 queries without text (dropped): 9:3",
        "task MSCOCO-T2I: 1 documents without an image (dropped): 9:13",
        "task MSCOCO-T2I: 1 documents whose image does not decode (dropped): 9:12",
    ]
    decoded = PILImage.open(io.BytesIO(corpus[1]["image"]))
    assert (decoded.size, decoded.getpixel((0, 0))) == ((5, 2), (0, 0, 255))


def vidore_repo() -> dict[str, dict[str, Dataset]]:
    """ViDoRe BEIR layout (mteb/*_beir): integer ids, ``query`` text, page screenshots."""
    queries = Dataset.from_dict({"query-id": [0, 1], "query": ["What is the revenue?", "Who signed?"]})
    corpus = Dataset.from_dict(
        {"corpus-id": [10, 11], "image": [image(RED), image(BLUE)]},
        features=Features({"corpus-id": Value("int64"), "image": Image()}),
    )
    qrels = Dataset.from_dict({"query-id": [0, 1], "corpus-id": [11, 10], "score": [1, 1]})
    return {"queries": {"test": queries}, "corpus": {"test": corpus}, "qrels": {"test": qrels}}


def test_vidore_layout_turns_integer_ids_into_strings(hub, tmp_path):
    spec = mirror(hub, tmp_path, task("ViDoRe-TAT-DQA", "t2vd", "vidore", "mteb/tatdqa_test_beir"), vidore_repo())
    queries, corpus, qrels = read_all(SourceReader(spec, tmp_path))
    assert queries == [
        {"id": "0", "text": "What is the revenue?", "image": None},
        {"id": "1", "text": "Who signed?", "image": None},
    ]
    assert corpus == [{"id": "10", "text": None, "image": RED}, {"id": "11", "text": None, "image": BLUE}]
    assert qrels == [{"query_id": "0", "doc_id": "11", "relevance": 1}, {"query_id": "1", "doc_id": "10", "relevance": 1}]


def test_msmarco_style_eval_split_is_picked_among_several(hub, tmp_path):
    repo = beir_repo()
    repo["default"]["dev"] = repo["default"].pop("train")
    spec = mirror(hub, tmp_path, task("MSMARCO", "t2t", "beir", "mteb/msmarco", split="dev"), repo)
    assert SourceReader(spec, tmp_path).qrels.to_dict("records") == [{"query_id": "q3", "doc_id": "d3", "relevance": 1}]


# ---------------------------------------------------------------- mirrors


def test_download_mirrors_each_source_once_with_a_manifest(hub, tmp_path):
    hub("mteb/arguana", beir_repo())
    spec = task("ArguAna", "t2t", "beir", "mteb/arguana")
    pack_only = TaskSpec(name="Mini", type="t2t", instruction="x", pack="packs/mini")
    assert download([spec, pack_only], tmp_path) == [mirror_path(spec.source, tmp_path)]
    assert download([spec], tmp_path) == [mirror_path(spec.source, tmp_path)]
    target = tmp_path / "sources" / "mteb" / "arguana" / REV
    assert hub.calls == [("mteb/arguana", "dataset", REV, target)]
    manifest = json.loads((target.parent / f"{REV}.json").read_text())
    assert manifest == {
        "repo": "mteb/arguana",
        "revision": REV,
        "files": [
            "README.md",
            "corpus/corpus-00000-of-00001.parquet",
            "default/test-00000-of-00001.parquet",
            "default/train-00000-of-00001.parquet",
            "queries/queries-00000-of-00001.parquet",
        ],
    }


def test_composite_downloads_every_part_and_reads_each_on_its_own(hub, tmp_path):
    hub("mteb/CQADupstackAndroidRetrieval", mteb_repo())
    hub("mteb/cqadupstack-english", beir_repo())
    parts = [
        {"name": "android", "source": {"layout": "mteb", "path": "mteb/CQADupstackAndroidRetrieval", "revision": REV}},
        {"name": "english", "source": {"layout": "beir", "path": "mteb/cqadupstack-english", "revision": REV}},
    ]
    spec = TaskSpec(name="CQADupStack", type="t2t", instruction="Find duplicates.", parts=parts)
    download([spec], tmp_path)
    android, english = spec.units()
    assert next(row for b in SourceReader(android, tmp_path).corpus() for row in b.to_pylist()) == {
        "id": "c1",
        "text": "Eiffel Tower a tower",
        "image": None,
    }
    assert len(SourceReader(english, tmp_path).qrels) == 3
    with pytest.raises(MRBError) as err:
        SourceReader(spec, tmp_path)
    assert str(err.value) == "task 'CQADupStack' has no source (a composite: read each of task.units())"


def test_data_dir_comes_from_the_environment(hub, tmp_path, monkeypatch):
    hub("mteb/arguana", beir_repo())
    monkeypatch.setenv("MRB_DATA_DIR", str(tmp_path / "env"))
    spec = task("ArguAna", "t2t", "beir", "mteb/arguana")
    download([spec])
    assert SourceReader(spec).qrels.shape == (3, 3)
    assert hub.calls[0][3] == tmp_path / "env" / "sources" / "mteb" / "arguana" / REV


def test_offline_without_the_revision_names_the_download_command(hub, tmp_path):
    hub("mteb/arguana", beir_repo(), revision=OTHER_REV)
    held = TaskSpec(
        name="ArguAna", type="t2t", instruction="x", source={"layout": "beir", "path": "mteb/arguana", "revision": OTHER_REV}
    )
    download([held], tmp_path)
    with pytest.raises(MRBError) as err:
        SourceReader(task("ArguAna", "t2t", "beir", "mteb/arguana"), tmp_path)
    assert str(err.value) == (
        f"task 'ArguAna': mteb/arguana at revision {REV} is not in the mirror {tmp_path}/sources/mteb/arguana "
        f"(it holds revision {OTHER_REV}) and HF_HUB_OFFLINE=1 forbids fetching it; "
        f"run `mrb download --tasks ArguAna --data-dir {tmp_path}`"
    )


def test_offline_without_any_mirror_names_the_download_command(tmp_path, monkeypatch):
    monkeypatch.delenv("MRB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parts = [{"name": n, "source": {"layout": "beir", "path": f"mteb/cqadupstack-{n}", "revision": REV}} for n in ("gis", "tex")]
    gis = TaskSpec(name="CQADupStack", type="t2t", instruction="x", parts=parts).units()[0]
    with pytest.raises(MRBError) as err:
        SourceReader(gis)
    assert str(err.value) == (
        f"task 'CQADupStack-gis': mteb/cqadupstack-gis at revision {REV} is not in the mirror "
        f"{tmp_path}/mrb/sources/mteb/cqadupstack-gis and HF_HUB_OFFLINE=1 forbids fetching it; "
        "run `mrb download --tasks CQADupStack`"
    )


def test_a_file_missing_from_the_mirror_is_named(hub, tmp_path):
    hub("mteb/arguana", beir_repo())
    spec = task("ArguAna", "t2t", "beir", "mteb/arguana")
    (target,) = download([spec], tmp_path)
    (target / "corpus" / "corpus-00000-of-00001.parquet").unlink()
    with pytest.raises(MRBError) as err:
        SourceReader(spec, tmp_path)
    assert str(err.value) == (
        f"task 'ArguAna': the mirror {target} lacks corpus/corpus-00000-of-00001.parquet; "
        f"fetch it again with `mrb download --tasks ArguAna --data-dir {tmp_path}`"
    )
    download([spec], tmp_path)  # fetching again repairs it
    assert len(hub.calls) == 2 and SourceReader(spec, tmp_path).qrels.shape == (3, 3)


def test_an_interrupted_download_is_reported(hub, tmp_path):
    hub("mteb/arguana", beir_repo())
    spec = task("ArguAna", "t2t", "beir", "mteb/arguana")
    (target,) = download([spec], tmp_path)
    (target.parent / f"{REV}.json").unlink()
    with pytest.raises(MRBError) as err:
        SourceReader(spec, tmp_path)
    assert str(err.value) == (
        f"task 'ArguAna': the mirror {target} is incomplete (no {REV}.json); "
        f"fetch it again with `mrb download --tasks ArguAna --data-dir {tmp_path}`"
    )


def test_a_failed_fetch_is_an_mrb_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(sources, "snapshot_download", refuse)
    with pytest.raises(MRBError) as err:
        download([task("ArguAna", "t2t", "beir", "mteb/arguana")], tmp_path)
    assert str(err.value) == (  # the hub is off in the tests, so an offline failure is said as such
        f"task 'ArguAna': cannot fetch mteb/arguana at revision {REV}: it is not in the local hub cache and the hub is "
        f"off (HF_HUB_OFFLINE=1): fetch it where the hub can be reached (`mrb download --tasks ArguAna --data-dir "
        f"{tmp_path}`, then copy {tmp_path}/sources/mteb/arguana/{REV} here), or unset HF_HUB_OFFLINE"
    )


# ---------------------------------------------------------------- bad input


def test_a_missing_config_is_named(hub, tmp_path):
    repo = mbeir_repo()
    del repo["qrels"]
    spec = mirror(hub, tmp_path, task("MSCOCO-T2I", "t2i", "mbeir", "mteb/mbeir_mscoco_task0"), repo)
    assert qrels_error(spec, tmp_path) == (
        f"task 'MSCOCO-T2I': {mirror_path(spec.source, tmp_path)} has no config 'qrels' "
        "for the qrels (layout 'mbeir' expects it; the dataset has query, corpus)"
    )


def test_a_missing_split_is_named(hub, tmp_path):
    spec = mirror(hub, tmp_path, task("ArguAna", "t2t", "beir", "mteb/arguana", split="validation"), beir_repo())
    assert qrels_error(spec, tmp_path) == (
        f"task 'ArguAna': config 'default' of {mirror_path(spec.source, tmp_path)} has no split 'validation' (it has test, train)"
    )


def test_a_column_the_task_type_needs_is_required(hub, tmp_path):
    spec = mirror(hub, tmp_path, task("ArguAna-I2T", "i2t", "beir", "mteb/arguana"), beir_repo())
    assert qrels_error(spec, tmp_path) == (
        f"task 'ArguAna-I2T': the queries of {mirror_path(spec.source, tmp_path)} (config 'queries') lack column(s) "
        "image needed for a I→T task (columns: _id, text)"
    )


@pytest.mark.parametrize(
    ("queries", "scores", "message"),
    [
        (["q1", "q1", "q2"], [1.0, 1.0], "the queries of {path} repeat id 'q1'"),
        (["q1", "q2", "q3"], [1.0, 0.5], "qrels score 0.5 (query 'q2', doc 'd2') is not a whole relevance grade"),
    ],
)
def test_ambiguous_ids_and_grades_are_errors(hub, tmp_path, queries, scores, message):
    repo = beir_repo()
    repo["queries"]["queries"] = Dataset.from_dict({"_id": queries, "text": ["a", "b", "c"]})
    repo["default"]["test"] = Dataset.from_dict({"query-id": ["q1", "q2"], "corpus-id": ["d1", "d2"], "score": scores})
    spec = mirror(hub, tmp_path, task("ArguAna", "t2t", "beir", "mteb/arguana"), repo)
    assert qrels_error(spec, tmp_path) == "task 'ArguAna': " + message.format(path=mirror_path(spec.source, tmp_path))


def test_qrels_of_unknown_queries_and_repeated_pairs_are_counted(hub, tmp_path, caplog):
    repo = beir_repo()
    repo["default"]["test"] = Dataset.from_dict(
        {"query-id": ["q1", "q1", "q7", "q2"], "corpus-id": ["d1", "d1", "d1", "d2"], "score": [1.0, 2.0, 1.0, 1.0]}
    )
    spec = mirror(hub, tmp_path, task("ArguAna", "t2t", "beir", "mteb/arguana"), repo)
    reader = SourceReader(spec, tmp_path)
    with caplog.at_level(logging.WARNING, logger="mrb.sources"):
        assert reader.qrels.to_dict("records") == [
            {"query_id": "q1", "doc_id": "d1", "relevance": 2},
            {"query_id": "q2", "doc_id": "d2", "relevance": 1},
        ]
    assert caplog.messages == [
        "task ArguAna: 1 repeated qrels pairs (merged, highest relevance kept): q1/d1",
        "task ArguAna: 1 qrels rows naming a query absent from the queries (dropped): q7",
        "task ArguAna: 1 queries without qrels (dropped): q3",
    ]


def test_online_without_a_mirror_reads_the_hub_at_the_pinned_revision(tmp_path, monkeypatch):
    # The hub itself is out of reach here; datasets' refusal shows which repo it was asked for.
    monkeypatch.setattr(sources, "is_offline_mode", lambda: False)
    reader = SourceReader(task("ArguAna", "t2t", "beir", "mteb/arguana"), tmp_path)
    assert (reader._path, reader._revision, reader._cache_dir) == ("mteb/arguana", REV, None)
    with pytest.raises(MRBError) as err:
        _ = reader.qrels
    assert str(err.value) == (
        "task 'ArguAna': cannot read the list of configs of mteb/arguana: "
        "Couldn't reach 'mteb/arguana' on the Hub (OfflineModeIsEnabled); "
        f"to mirror the data run `mrb download --tasks ArguAna --data-dir {tmp_path}`"
    )


def test_mrb_download_mirrors_the_selected_tasks(hub, tmp_path, capsys):
    from mrb.cli import main

    hub("mteb/arguana", beir_repo())
    (tmp_path / "tasks").mkdir()
    source = f"source: {{layout: beir, path: mteb/arguana, revision: {REV}}}\n"
    (tmp_path / "tasks" / "a.yaml").write_text("name: MyArguAna\ntype: t2t\ninstruction: Refute it.\n" + source)
    argv = ["download", "--tasks", "MyArguAna", "--data-dir", str(tmp_path / "data"), "--task-dir", str(tmp_path / "tasks")]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"{tmp_path}/data/sources/mteb/arguana/{REV}\n"
    assert SourceReader(load_task_file(tmp_path / "tasks" / "a.yaml"), tmp_path / "data").qrels.shape == (3, 3)
    capsys.readouterr()  # datasets' progress bars
    assert main(["download", "--tasks", "MyArguana", "--task-dir", str(tmp_path / "tasks")]) == 2
    assert capsys.readouterr().err == "mrb: error: no task matches 'MyArguana'. Did you mean: MyArguAna, ArguAna?\n"
