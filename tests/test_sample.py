"""The sample stage: shards, schema, resume, greedy split, ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from gsmv import sample
from gsmv.artifacts import RunPaths, list_shards, read_json, read_metrics, read_shards, shard_path
from gsmv.data.tasks import load_split
from gsmv.errors import GsmvError


def lively_generator(src: Path, dst: Path) -> None:
    """The tiny random Llama with larger weights (varied samples), saved as a generator folder."""
    from gsmv.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(src, dtype=torch.float32, device="cpu")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)


@pytest.fixture
def run(tiny_cfg, tiny_llama_dir):
    cfg = tiny_cfg
    cfg.data.test_limit = 20
    cfg.sample.n_test = 3
    cfg.sample.problems_per_shard = 8
    cfg.sample.max_new_tokens = 24
    cfg.sample.batch_size = 16
    paths = RunPaths(cfg.run_dir)
    lively_generator(tiny_llama_dir, paths.generator_final)
    return cfg, paths


def test_shards_schema_and_order(run):
    cfg, paths = run
    summary = sample.main(cfg, "test")
    shards = list_shards(paths.samples("test"))
    assert [p.name for p in shards] == [shard_path(paths.samples("test"), i).name for i in range(3)]
    assert summary["shards"] == 3 and summary["samples_here"] == 60
    problems = load_split(cfg, "test")
    t = read_shards(paths.samples("test")).table
    assert t.schema.equals(sample.SAMPLE_SCHEMA)
    assert pq.read_table(shards[2]).num_rows == 4 * 3  # 20 problems: 8 + 8 + 4
    want = [(p.id, j) for p in problems for j in range(3)]
    assert list(zip(t.column("problem_id").to_pylist(), t.column("sample_idx").to_pylist(), strict=True)) == want
    rows = t.to_pylist()
    for r in rows:
        assert r["n_tokens"] == len(r["tokens"]) == len(r["forced"]) <= 24
        assert r["is_correct"] is not None
    # seeds differ per sample: a problem's samples are not all the same
    assert len({tuple(r["tokens"]) for r in rows[:3]}) > 1
    done = read_json(paths.samples("test") / "done.json")
    assert done["shards"] == 3 and done["samples_per_problem"] == 3
    [rec] = read_metrics(paths.metrics, "sample")
    assert rec["samples"] == 60 and rec["tokens"] == sum(r["n_tokens"] for r in rows)


def test_rerun_regenerates_only_missing_shards_identically(run):
    cfg, paths = run
    sample.main(cfg, "test")
    folder = paths.samples("test")
    before = {p.name: (p.stat().st_mtime_ns, pq.read_table(p)) for p in list_shards(folder)}
    shard_path(folder, 1).unlink()
    summary = sample.main(cfg, "test")
    assert summary["sampled_here"] == 1 and summary["samples_here"] == 8 * 3
    after = {p.name: (p.stat().st_mtime_ns, pq.read_table(p)) for p in list_shards(folder)}
    assert sorted(after) == sorted(before)
    for name in before:
        assert after[name][1].equals(before[name][1]), name  # the resumed shard holds the same samples
        if name != shard_path(folder, 1).name:
            assert after[name][0] == before[name][0]  # untouched
    # nothing left to do: a third run samples nothing
    assert sample.main(cfg, "test")["sampled_here"] == 0


def test_greedy_split_is_one_sample_at_temperature_zero(run):
    cfg, paths = run
    sample.main(cfg, "test_greedy")
    t = read_shards(paths.samples("test_greedy")).table
    assert t.num_rows == 20 and set(t.column("sample_idx").to_pylist()) == {0}
    cfg.sample.seed = 12345  # greedy ignores the seed
    first = t.column("tokens").to_pylist()
    for p in list_shards(paths.samples("test_greedy")):
        p.unlink()
    sample.main(cfg, "test_greedy")
    assert read_shards(paths.samples("test_greedy")).table.column("tokens").to_pylist() == first


def test_prompt_that_does_not_fit_the_context_stops_before_sampling(run):
    from transformers import AutoConfig

    cfg, paths = run
    context = AutoConfig.from_pretrained(paths.generator_final).max_position_embeddings
    cfg.sample.max_new_tokens = context - 4  # every formatted question is longer than 4 tokens
    with pytest.raises(GsmvError, match=rf"sample test: 20 problem\(s\) do not fit the model's context of {context} "):
        sample.main(cfg, "test")
    assert not list_shards(paths.samples("test"))
    cfg.sample.max_new_tokens = 24
    sample.main(cfg, "test")  # fits: samples as before
    assert read_shards(paths.samples("test")).table.num_rows == 60


def test_bad_split_and_missing_generator(tiny_cfg):
    with pytest.raises(GsmvError, match="unknown split"):
        sample.main(tiny_cfg, "dev")
    with pytest.raises(GsmvError, match="run finetune first"):
        sample.main(tiny_cfg, "val")
    assert not list_shards(RunPaths(tiny_cfg.run_dir).samples("val"))


SCRIPT = """
import sys
from gsmv.config import load_config
from gsmv import sample
cfg = load_config(None, sys.argv[1:])
sample.main(cfg, "test")
"""


@pytest.mark.slow
def test_two_processes_write_the_same_shards(run, tmp_path):
    cfg, paths = run
    sample.main(cfg, "test")
    one = read_shards(paths.samples("test")).table
    two_root = tmp_path / "two"
    (two_root / "generator").mkdir(parents=True)
    os.symlink(paths.generator_final, two_root / "generator" / "final")
    script = tmp_path / "sample_script.py"
    script.write_text(SCRIPT)
    overrides = [f"data.dir={cfg.data.dir}", f"out_dir={tmp_path}", "name=two", f"data.val_size={cfg.data.val_size}",
                 "data.test_limit=20", "device=cpu", "threads=1", "sample.n_test=3", "sample.problems_per_shard=8",
                 "sample.max_new_tokens=24", "sample.batch_size=16"]
    root = Path(__file__).parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(root / "configs/accelerate/cpu_ddp.yaml"), "--main_process_port", "0", str(script), *overrides],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = read_shards(two_root / "samples" / "test").table
    # rank 0 sampled shards 0 and 2 (metrics come from the main process)
    assert [r["shards"] for r in read_metrics(two_root / "metrics.jsonl", "sample")] == [2]
    assert two.equals(one)
