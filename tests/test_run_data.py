"""The run-folder reader (gsmv.run_data): its cross-checks and one-line errors, and reading a few rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from report.fake_run import make_design, write_fake_run

from gsmv.artifacts import RunPaths, list_shards
from gsmv.errors import GsmvError
from gsmv.run_data import load_run, read_rows


@pytest.fixture
def cfg(tiny_cfg):
    tiny_cfg.data.test_limit = 12
    return tiny_cfg


def _design() -> tuple[np.ndarray, np.ndarray]:
    return make_design(12, n=8)


def test_load_run_aligns_samples_scores_and_greedy_by_problem_and_sample(cfg):
    correct, scores = _design()
    write_fake_run(cfg, correct=correct, scores=scores, greedy=correct[:, 0].copy())  # shards in shuffled order
    data = load_run(cfg)
    assert data.n == 8 and len(data.problems) == 12
    assert (data.correct == correct).all()
    assert (data.scores == scores.astype(np.float64)).all()
    assert (data.greedy_correct == correct[:, 0]).all()
    ids = data.samples.column("problem_id").to_pylist()
    idx = data.samples.column("sample_idx").to_pylist()
    assert all(ids[data.sample_rows[p, j]] == data.problems[p].id and idx[data.sample_rows[p, j]] == j
               for p in range(12) for j in range(8))


def test_missing_scores_is_an_error_naming_the_folder(cfg):
    correct, _ = _design()
    write_fake_run(cfg, correct=correct, scores=None)
    with pytest.raises(GsmvError, match=r"scores/test"):
        load_run(cfg)
    assert load_run(cfg, need_scores=False).scores is None


def test_uneven_samples_per_problem_is_an_error(cfg):
    correct, scores = _design()
    write_fake_run(cfg, correct=correct, scores=scores)
    shard = list_shards(RunPaths(cfg.run_dir).samples("test"))[0]
    t = pq.read_table(shard)
    pq.write_table(t.slice(1), shard)
    with pytest.raises(GsmvError, match=r"samples/test: problem test-\d+ has 7 samples, expected 8"):
        load_run(cfg)


def test_problem_not_in_split_is_an_error_naming_the_shard(cfg):
    correct, scores = _design()
    write_fake_run(cfg, correct=correct, scores=scores)
    cfg.data.test_limit = 10  # the samples hold problems 10 and 11, now outside the split
    with pytest.raises(GsmvError, match=r"samples/test/shard-0000\d\.parquet: problem_id 'test-0001[01]' is not in"):
        load_run(cfg)


def test_bad_score_values_and_columns_are_errors(cfg):
    correct, scores = _design()
    scores[3, 2] = np.nan
    write_fake_run(cfg, correct=correct, scores=scores)
    with pytest.raises(GsmvError, match=r"scores/test: score of problem test-00003 sample 2 is nan"):
        load_run(cfg)
    shard = list_shards(RunPaths(cfg.run_dir).scores("test"))[0]
    pq.write_table(pq.read_table(shard).drop_columns(["score"]), shard)
    with pytest.raises(GsmvError, match=rf"{shard}: missing column\(s\) score"):
        load_run(cfg)


def test_read_rows_reads_only_the_shards_that_hold_the_rows(tmp_path, monkeypatch):
    shards = []
    for s in range(3):
        path = tmp_path / f"shard-{s:05d}.parquet"
        cols = {"i": list(range(10 * s, 10 * s + 4)), "text": [f"t{10 * s + k}" for k in range(4)]}
        if s != 0:
            cols["extra"] = [[s, k] for k in range(4)]  # a column not every shard has
        pq.write_table(pa.table(cols), path)
        shards.append(path)
    shard_of = np.repeat(np.arange(3), 4)
    read = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda p, **kw: read.append(p) or real(p, **kw))
    t = read_rows(shards, shard_of, np.array([9, 1, 8, 2]), ["text", "extra"])
    assert t.column("text").to_pylist() == ["t21", "t1", "t20", "t2"]  # the order asked for
    assert t.column("extra").to_pylist() == [[2, 1], None, [2, 0], None]
    assert sorted(read) == [shards[0], shards[2]]  # shard 1 holds none of them: not read
