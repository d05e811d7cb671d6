"""Results read back as typed objects: `mrb.load_results` and `TaskScores.read` give what the run wrote."""

from __future__ import annotations

import pytest

import mrb
from mrb.errors import MRBError
from mrb.results import Status, TaskScores


def test_results_read_back_as_the_run_returned_them(tmp_path):
    board = mrb.evaluate("bm25", "mini", output_dir=tmp_path, quiet=True).set_index("task")
    loaded = {scores.task: scores for scores in mrb.load_results(tmp_path)}
    assert list(loaded) == board.index.tolist()
    facts = loaded["MiniFacts-T2T"]
    assert (facts.model, facts.status, round(facts.value, 7), facts.n_queries) == ("bm25", Status.OK, 0.8223131, 16)
    assert facts.per_query["value"].mean() == pytest.approx(facts.value, abs=1e-12)
    assert (
        facts.identity is not None and facts.identity.digest == TaskScores.read(tmp_path, "bm25", "MiniFacts-T2T").identity.digest
    )
    photos = TaskScores.read(tmp_path, "bm25", "MiniPhotos-T2I")
    assert (photos.status, photos.value, photos.per_query) == (Status.UNSUPPORTED, None, None)
    with pytest.raises(MRBError) as err:
        TaskScores.read(tmp_path, "oracle", "MiniFacts-T2T")
    assert str(err.value) == f"{tmp_path / 'leaderboard.parquet'}: no result of model 'oracle' on task MiniFacts-T2T"
