"""Tasks: where problems come from (synth, a local folder, the hub, auto), step checks and data fingerprints."""

from __future__ import annotations

import json
import sys
import types

import pytest

from gsmv import cli
from gsmv.config import load_config
from gsmv.data import tasks
from gsmv.data.gsm8k import load_jsonl
from gsmv.errors import GsmvError

SYNTH = ["data.source=synth", "data.synth.train_size=120", "data.synth.test_size=30", "data.val_size=20"]


def test_synth_splits_are_deterministic_disjoint_and_sized():
    cfg = load_config(None, SYNTH)
    train, val, test = (tasks.load_split(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (100, 20, 30)
    assert not {p.question for p in train + val} & {p.question for p in test}
    assert tasks.load_split(load_config(None, SYNTH), "test") == test
    other = load_config(None, [*SYNTH, "data.synth.seed=1"])
    assert tasks.load_split(other, "test") != test
    assert tasks.get_task(cfg).step_truth and not tasks.get_task(load_config(None, ["data.source=hf"])).step_truth


def test_fresh_problems_are_new_deterministic_and_of_the_train_distribution():
    cfg = load_config(None, [*SYNTH, "data.synth.max_steps=3"])
    fresh = tasks.fresh_problems(cfg, 50)
    assert len(fresh) == 50 and len({p.question for p in fresh}) == 50
    splits = {p.question for s in ("train", "val", "test") for p in tasks.load_split(cfg, s)}
    assert not {p.question for p in fresh} & splits
    assert tasks.fresh_problems(cfg, 50) == fresh and tasks.fresh_problems(cfg, 10) == fresh[:10]
    assert max(len(p.solution.splitlines()) - 1 for p in fresh) <= 3  # train's settings
    other = tasks.fresh_problems(cfg, 50, stream="verifier")  # another stream: other problems, still none a split's
    assert all(p.id.startswith("verifier-") for p in other) and fresh[0].id.startswith("fresh-")
    assert {p.question for p in other} != {p.question for p in fresh} and not {p.question for p in other} & splits
    with pytest.raises(GsmvError, match="synth"):
        tasks.fresh_problems(load_config(None, ["data.source=hf"]), 5)


def test_heldout_test_split_has_more_steps():
    cfg = load_config(None, [*SYNTH, "data.synth.max_steps=3", "data.synth.test_min_steps=6",
                             "data.synth.test_max_steps=7"])
    steps = {len(p.solution.splitlines()) - 1 for p in tasks.load_split(cfg, "test")}
    assert steps <= {6, 7} and max(len(p.solution.splitlines()) - 1 for p in tasks.load_split(cfg, "train")) <= 3


@pytest.mark.parametrize("bad, needle", [
    ("data.synth.min_steps=4", "min <= max"),
    ("data.synth.max_steps=20", "at most 12"),
    ("data.synth.train_size=0", "data.synth.train_size"),
    ("data.synth.test_max_steps=5", "test_min_steps/test_max_steps"),
    ("data.synth.p_combine=2", "data.synth.p_combine"),
])
def test_bad_synth_knobs_are_one_line_errors(bad, needle):
    with pytest.raises(GsmvError, match=needle):
        load_config(None, [*SYNTH, "data.synth.max_steps=3", bad])


def test_make_data_writes_what_a_local_run_reads(tmp_path, capsys):
    out = tmp_path / "made"
    assert cli.main(["make-data", "--config", "smoke-synth", "--out", str(out)]) == 0
    assert "train.jsonl: 240 problems" in capsys.readouterr().out
    synth_cfg = load_config("smoke-synth")
    local_cfg = load_config("smoke-synth", ["data.source=local", f"data.dir={out}"])
    for split in ("train", "val", "test"):
        assert tasks.load_split(local_cfg, split) == tasks.load_split(synth_cfg, split)
    for split in ("train", "test"):  # same content, same hash, wherever it comes from
        assert tasks.data_fingerprint(local_cfg, split) == tasks.data_fingerprint(synth_cfg, split)
    info = json.loads((out / "info.json").read_text())
    assert info["task"] == "synth" and info["test"]["problems"] == 40


def test_fingerprint_follows_the_content(tmp_path, tiny_data_dir):
    import shutil

    shutil.copytree(tiny_data_dir, tmp_path / "d")
    cfg = load_config(None, [f"data.dir={tmp_path / 'd'}"])
    before = tasks.data_fingerprint(cfg, "test")
    lines = (tmp_path / "d" / "test.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["question"] += " (edited)"
    (tmp_path / "d" / "test.jsonl").write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    assert tasks.data_fingerprint(cfg, "test") != before
    assert tasks.data_fingerprint(cfg, "train") == tasks.data_fingerprint(
        load_config(None, [f"data.dir={tiny_data_dir}"]), "train")


def _no_local_gsm8k(monkeypatch, tmp_path):
    """Nothing local: no data.dir, no $GSMV_DATA_DIR, and no ../shared beside the cwd or the checkout."""
    monkeypatch.delenv("GSMV_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tasks, "_local_candidates",
                        lambda cfg: [tmp_path / "shared" / "data" / "gsm8k"] if not cfg.data.dir else
                        [tasks.Path(cfg.data.dir)])


def _fake_datasets(monkeypatch, tiny_data_dir, fail: bool = False) -> list:
    """A stand-in `datasets` module (no network here) serving the tiny data, or failing like an offline hub."""
    calls = []

    class Split(list):
        pass

    def load_dataset(*args, **kwargs):
        calls.append(args)
        if fail:
            raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (offline)")
        return {s: Split(json.loads(x) for x in (tiny_data_dir / f"{s}.jsonl").read_text().splitlines())
                for s in ("train", "test")}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_auto_prefers_a_local_folder(monkeypatch, tiny_data_dir, tmp_path):
    calls = _fake_datasets(monkeypatch, tiny_data_dir)
    cfg = load_config(None, [f"data.dir={tiny_data_dir}", "data.source=auto"])
    assert tasks.load_split(cfg, "test") == load_jsonl(tiny_data_dir / "test.jsonl", "test")
    assert calls == []


def test_auto_falls_back_to_the_hub(monkeypatch, tiny_data_dir, tmp_path):
    _no_local_gsm8k(monkeypatch, tmp_path)
    calls = _fake_datasets(monkeypatch, tiny_data_dir)
    cfg = load_config(None, ["data.source=auto"])
    assert [p.question for p in tasks.load_split(cfg, "test")] == [
        p.question for p in load_jsonl(tiny_data_dir / "test.jsonl", "test")]
    assert calls and calls[0] == ("openai/gsm8k", "main")


def test_auto_with_neither_is_one_error_naming_both(monkeypatch, tiny_data_dir, tmp_path):
    _no_local_gsm8k(monkeypatch, tmp_path)
    _fake_datasets(monkeypatch, tiny_data_dir, fail=True)
    with pytest.raises(GsmvError) as e:
        tasks.load_split(load_config(None, ["data.source=auto"]), "test")
    msg = str(e.value)
    assert "shared/data/gsm8k" in msg and "openai/gsm8k" in msg and "data.source=synth" in msg and "\n" not in msg


def test_a_named_folder_without_files_is_not_replaced_by_the_hub(monkeypatch, tiny_data_dir, tmp_path):
    calls = _fake_datasets(monkeypatch, tiny_data_dir)
    with pytest.raises(GsmvError, match="GSM8K file not found"):
        tasks.load_split(load_config(None, [f"data.dir={tmp_path}"]), "test")
    assert calls == []


def test_first_wrong_step():
    values = frozenset({"7", "14"})
    right = "A has 3+4 = <<3+4=7>>7.\nB has 7*2 = <<7*2=14>>14.\n#### 14"
    assert tasks.first_wrong_step(right, values) is None
    lucky = "A has 3+5 = <<3+5=8>>8.\nB has 8+6 = <<8+6=14>>14.\n#### 14"  # right answer, wrong reasoning
    end = tasks.first_wrong_step(lucky, values)
    assert lucky[:end].endswith("<<3+5=8>>")
    assert tasks.first_wrong_step("#### 14", values) is None  # nothing to check


def test_val_taking_more_than_half_of_a_small_local_folder_is_a_one_line_error(tmp_path):
    # Issue 46: 30 problems of one's own under a preset's val_size=20 silently left 4 train problems.
    folder = tmp_path / "mine"
    folder.mkdir()
    for split, n in (("train", 24), ("test", 6)):
        recs = [{"question": f"Ana has {i} pens and buys 2. How many now?",
                 "answer": f"{i}+2=<<{i}+2={i + 2}>>{i + 2}\n#### {i + 2}"} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    local = ["data.source=local", f"data.dir={folder}"]
    for split in ("train", "val"):
        with pytest.raises(GsmvError) as e:
            tasks.load_split(load_config(None, [*local, "data.val_size=20"]), split)
        msg = str(e.value)
        assert "\n" not in msg and "'data.val_size' is 20" in msg and "20 of the 24 train problems" in msg
        assert "data.val_size=4" in msg and "at most 12" in msg
    suggested = load_config(None, [*local, "data.val_size=4"])
    assert (len(tasks.load_split(suggested, "train")), len(tasks.load_split(suggested, "val"))) == (20, 4)
    half = load_config(None, [*local, "data.val_size=12"])  # half is allowed
    assert len(tasks.load_split(half, "train")) == 12 and len(tasks.load_split(half, "test")) == 6
