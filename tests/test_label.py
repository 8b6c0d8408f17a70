"""The label stage: re-grading, atomic rewrites of changed shards, labels.json, bad ids."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from sample_shards import sample_row, write_shards, wrong_answer

from gsmv import label
from gsmv.artifacts import RunPaths
from gsmv.data.tasks import load_split
from gsmv.errors import GsmvError


def _rows(problems, plan: list[list[bool]], stored: dict[tuple[int, int], bool] | None = None) -> list[dict]:
    """plan[i][j]: sample j of problem i is right. `stored` overrides the label written in the shard."""
    rows = []
    for i, outcomes in enumerate(plan):
        for j, ok in enumerate(outcomes):
            text = problems[i].solution if ok else wrong_answer(problems[i].solution)
            lab = (stored or {}).get((i, j), ok)
            rows.append(sample_row(problems[i].id, j, text, [1, 2, 3], lab))
    return rows


def test_label_coverage_accuracy_and_rewrites(tiny_cfg):
    paths = RunPaths(tiny_cfg.run_dir)
    train = load_split(tiny_cfg, "train")
    val = load_split(tiny_cfg, "val")
    # train: problem 0 has 1/2 right, problem 1 0/2, problem 2 1/1 → accuracy 2/5, coverage 2/3.
    # The shard holding problem 1 stores one wrong label (True for a wrong sample) and one null.
    plan = [[True, False], [False, False], [True]]
    rows = _rows(train, plan, stored={(1, 0): True, (1, 1): None})
    shards = write_shards(paths.samples("train"), rows, rows_per_shard=2)  # shards: p0 | p1 | p2
    val_rows = _rows(val, [[False, False, False], [False, True, True]])
    write_shards(paths.samples("val"), val_rows, rows_per_shard=6)
    before = {p: p.stat().st_ino for p in shards}

    summary = label.main(tiny_cfg)
    out = json.loads((paths.root / "labels.json").read_text())

    assert summary["train_accuracy"] == pytest.approx(2 / 5) and summary["val_coverage"] == pytest.approx(1 / 2)
    assert out["train"]["problems"] == 3 and out["train"]["samples"] == 5
    assert out["train"]["accuracy"] == pytest.approx(2 / 5)
    assert out["train"]["coverage"] == pytest.approx(2 / 3)
    assert out["train"]["relabeled"] == 2
    assert out["val"]["accuracy"] == pytest.approx(2 / 6)
    assert out["val"]["coverage"] == pytest.approx(1 / 2)
    assert "test" not in out and "test_accuracy" not in summary  # no test samples yet

    # Only the shard with wrong labels was rewritten; its other columns are unchanged.
    after = {p: p.stat().st_ino for p in shards}
    assert after[shards[0]] == before[shards[0]] and after[shards[2]] == before[shards[2]]
    assert after[shards[1]] != before[shards[1]]
    t = pq.read_table(shards[1])
    assert t.column("is_correct").to_pylist() == [False, False]
    assert t.column("text").to_pylist() == [r["text"] for r in rows[2:4]]
    assert t.schema.names == pq.read_table(shards[0]).schema.names


def test_label_test_greedy_uses_test_references(tiny_cfg):
    paths = RunPaths(tiny_cfg.run_dir)
    test = load_split(tiny_cfg, "test")
    write_shards(paths.samples("test_greedy"), _rows(test, [[True], [False], [True], [True]]), 10)
    out = label.main(tiny_cfg)
    assert out["test_greedy_accuracy"] == pytest.approx(3 / 4)
    assert out["test_greedy_coverage"] == pytest.approx(3 / 4)


def test_label_unknown_problem_id_names_file_and_changes_nothing(tiny_cfg):
    paths = RunPaths(tiny_cfg.run_dir)
    train = load_split(tiny_cfg, "train")
    val = load_split(tiny_cfg, "val")
    good = write_shards(paths.samples("train"), _rows(train, [[True, False]], stored={(0, 0): False}), 10)
    # A val problem inside the train samples: not in the train split.
    bad_rows = _rows(val, [[True]])
    bad = write_shards(paths.samples("val") / ".." / "train_extra", bad_rows, 10)[0]
    target = paths.samples("train") / "shard-00001.parquet"
    bad.rename(target)
    ino = good[0].stat().st_ino

    with pytest.raises(GsmvError) as e:
        label.main(tiny_cfg)
    msg = str(e.value)
    assert str(target) in msg and val[0].id in msg and "\n" not in msg
    # Nothing was written: the mislabelled good shard was not rewritten and no labels.json exists.
    assert good[0].stat().st_ino == ino
    assert pq.read_table(good[0]).column("is_correct").to_pylist() == [False, False]
    assert not (paths.root / "labels.json").exists()


def test_label_without_samples_is_an_error(tiny_cfg):
    with pytest.raises(GsmvError, match="no sample shards"):
        label.main(tiny_cfg)


def test_label_missing_column_is_an_error(tiny_cfg):
    import pyarrow as pa

    from gsmv.artifacts import shard_path, write_parquet

    p = shard_path(RunPaths(tiny_cfg.run_dir).samples("train"), 0)
    write_parquet(p, pa.table({"problem_id": ["train-00000"], "text": ["#### 1"]}))
    with pytest.raises(GsmvError, match="missing column.*is_correct"):
        label.main(tiny_cfg)


def test_relabel_rewrites_stale_final_answers(tiny_cfg):
    # A shard written under an older answer rule: its stored final answers disagree with its texts.
    # Relabelling must rewrite them with the labels, so majority votes and labels never disagree.
    paths = RunPaths(tiny_cfg.run_dir)
    test = load_split(tiny_cfg, "test")
    rows = _rows(test, [[True, False]])
    rows[0]["final_answer"] = "999999"  # stale
    (shard,) = write_shards(paths.samples("test"), rows, 10)
    label.main(tiny_cfg, splits=("test",), out="labels-test.json")
    t = pq.read_table(shard)
    from gsmv.data.answers import extract_answer

    assert t.column("final_answer").to_pylist() == [extract_answer(r["text"]) for r in rows]
    assert json.loads((paths.root / "labels-test.json").read_text())["test"]["relabeled"] == 1
