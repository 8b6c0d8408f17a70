"""Loading GSM8K: records, ids, splits, limits, the HF path, and one-line errors on bad input."""

from __future__ import annotations

import json
import random
import sys

import pytest

from gsmv.data import gsm8k
from gsmv.data.gsm8k import Problem, format_prompt, load_jsonl
from gsmv.data.tasks import load_split
from gsmv.errors import GsmvError

GOOD = {"question": "Raj has 5 boxes with 3 coins in each. How many coins?", "answer": "5*3 = <<5*3=15>>15\n#### 15"}


def write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_load_jsonl_records(tiny_data_dir):
    path = tiny_data_dir / "train.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    problems = load_jsonl(path, "train")
    assert len(problems) == len(recs)
    for i, (p, rec) in enumerate(zip(problems, recs, strict=True)):
        assert p.id == f"train-{i:05d}"
        assert p.question == rec["question"]
        assert p.solution == rec["answer"]
        assert p.answer == rec["answer"].rsplit("#### ", 1)[1]


def test_answer_is_normalized_and_ids_follow_line_numbers(tmp_path):
    path = write_jsonl(
        tmp_path / "x.jsonl",
        [{"question": "q0", "answer": "#### 1,000"}, "", {"question": "q2", "answer": "#### 3.50"}],
    )
    assert load_jsonl(path, "test") == [
        Problem("test-00000", "q0", "#### 1,000", "1000"),
        Problem("test-00002", "q2", "#### 3.50", "3.5"),  # the blank line keeps its index
    ]


def test_problem_is_frozen():
    p = Problem("train-00000", "q", "#### 1", "1")
    with pytest.raises(AttributeError):
        p.answer = "2"  # type: ignore[misc]


def test_format_prompt():
    assert format_prompt("How many?") == "How many?\n"


def test_val_is_a_seeded_sample_of_train(tiny_data_dir, make_cfg):
    all_train = load_jsonl(tiny_data_dir / "train.jsonl", "train")
    cfg = make_cfg(tiny_data_dir, "data.val_size=30", "data.val_seed=7")
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    assert len(val) == 30 and len(train) == len(all_train) - 30
    picked = sorted(random.Random(7).sample(range(len(all_train)), 30))
    assert [p.id for p in val] == [f"train-{i:05d}" for i in picked]
    # A partition of train.jsonl, each part in file order.
    assert sorted(train + val, key=lambda p: p.id) == all_train
    assert [p.id for p in train] == sorted(p.id for p in train)
    # Fixed by the seed, different for another seed.
    assert load_split(cfg, "val") == val
    other = load_split(make_cfg(tiny_data_dir, "data.val_size=30", "data.val_seed=8"), "val")
    assert [p.id for p in other] != [p.id for p in val]


def test_test_split_and_zero_val(tiny_data_dir, make_cfg):
    cfg = make_cfg(tiny_data_dir, "data.val_size=0")
    assert load_split(cfg, "test") == load_jsonl(tiny_data_dir / "test.jsonl", "test")
    assert load_split(cfg, "val") == []
    assert load_split(cfg, "train") == load_jsonl(tiny_data_dir / "train.jsonl", "train")


def test_limits_take_the_first_k(tiny_data_dir, make_cfg):
    full = make_cfg(tiny_data_dir, "data.val_size=30")
    cut = make_cfg(tiny_data_dir, "data.val_size=30", "data.train_limit=5", "data.val_limit=3", "data.test_limit=4")
    for split, k in [("train", 5), ("val", 3), ("test", 4)]:
        assert load_split(cut, split) == load_split(full, split)[:k]
    big = make_cfg(tiny_data_dir, "data.val_size=30", "data.test_limit=100000")
    assert load_split(big, "test") == load_split(full, "test")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.val_size=240"], "data.val_size"),  # would leave no train problems
        (["data.val_size=-1"], "data.val_size"),
        (["data.val_size=30", "data.train_limit=-1"], "data.train_limit"),
    ],
)
def test_bad_split_settings(tiny_data_dir, make_cfg, overrides, needle):
    with pytest.raises(GsmvError, match=needle):
        load_split(make_cfg(tiny_data_dir, *overrides), "train")


def test_unknown_split(tiny_data_dir, make_cfg):
    with pytest.raises(GsmvError, match="unknown split 'dev'"):
        load_split(make_cfg(tiny_data_dir), "dev")


def test_missing_file_names_path_and_setting(tmp_path, make_cfg):
    with pytest.raises(GsmvError) as e:
        load_split(make_cfg(tmp_path), "test")
    msg = str(e.value)
    assert str(tmp_path / "test.jsonl") in msg and "data.dir" in msg and "GSMV_DATA_DIR" in msg
    assert "\n" not in msg


def test_data_dir_from_environment(tmp_path, tiny_data_dir, monkeypatch):
    from gsmv.config import load_config

    monkeypatch.setenv("GSMV_DATA_DIR", str(tiny_data_dir))
    assert load_split(load_config(None, ["data.val_size=0"]), "test") == load_jsonl(
        tiny_data_dir / "test.jsonl", "test"
    )


@pytest.mark.parametrize(
    ("bad_line", "needle"),
    [
        ('{"question": "q", "answer": "#### 1"', "invalid JSON"),
        ('["question", "answer"]', "expected a JSON object"),
        ({"answer": "#### 1"}, "missing field 'question'"),
        ({"question": "q"}, "missing field 'answer'"),
        ({"question": 5, "answer": "#### 1"}, "field 'question' must be a string, got int"),
        ({"question": "q", "answer": ["#### 1"]}, "field 'answer' must be a string, got list"),
        ({"question": "q", "answer": None}, "field 'answer' must be a string, got NoneType"),
        ({"question": "q", "answer": "15 coins"}, "field 'answer' has no '####' line"),
        ({"question": "q", "answer": "#### fifteen"}, "field 'answer' has no number after the last '####'"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, bad_line, needle):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, bad_line, GOOD])
    with pytest.raises(GsmvError) as e:
        load_jsonl(path, "train")
    msg = str(e.value)
    assert msg.startswith(f"{path}:2: ") and needle in msg
    assert "\n" not in msg


@pytest.fixture
def fake_hub(monkeypatch, tiny_data_dir):
    """datasets.load_dataset serving the tiny data as local datasets.Dataset objects; records its calls."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.DatasetDict(
            {
                split: datasets.Dataset.from_list(
                    [json.loads(line) for line in (tiny_data_dir / f"{split}.jsonl").read_text().splitlines()]
                )
                for split in ("train", "test")
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hf_source_matches_local(fake_hub, tiny_data_dir, make_cfg):
    local = make_cfg(tiny_data_dir, "data.val_size=30")
    hf = make_cfg(tiny_data_dir, "data.val_size=30", "data.source=hf")
    for split in ("train", "val", "test"):
        assert load_split(hf, split) == load_split(local, split)
    assert fake_hub[0] == (("openai/gsm8k", "main"), {})


def test_hf_bad_record_names_the_row(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [GOOD, {"question": "q", "answer": "no final line"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: {"train": datasets.Dataset.from_list(rows)})
    with pytest.raises(GsmvError, match=r"^openai/gsm8k:train:2: field 'answer' has no '####' line$"):
        gsm8k.load_hf("train")


def test_hf_load_failure_is_one_line(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub\n(offline)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(GsmvError) as e:
        gsm8k.load_hf("test")
    assert "openai/gsm8k" in str(e.value) and "data.source=local" in str(e.value) and "\n" not in str(e.value)


def test_hf_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(GsmvError, match="needs the `datasets` package"):
        gsm8k.load_hf("test")


def test_full_gsm8k_splits(gsm8k_dir, make_cfg):
    cfg = make_cfg(gsm8k_dir)
    train, val, test = (load_split(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (7473 - cfg.data.val_size, cfg.data.val_size, 1319)
    assert sorted(p.id for p in train + val) == [f"train-{i:05d}" for i in range(7473)]
    assert test[-1].id == "test-01318"
    # GSM8K's final answers are all integers (a few negative).
    assert all(p.answer.lstrip("-").isdigit() for p in train + val + test)
